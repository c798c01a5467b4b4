"""What multi-objective early stopping buys: the same search with MO-ASHA and without, side by side.

    python bench/moasha_payoff.py [--space examples/quickstart.yaml] [--seeds 0 1 2] [--trials 24]

For each seed the space's search runs twice through the Optuna backend (same sampler, seed, trial
count and concurrency): once with the YAML's `early_stopping` (MO-ASHA in the quickstart) and
once with `early_stopping: none`; the order of the two alternates between seeds. All runs share
one feature cache, warmed first with every expert configuration the space can use, so both pay
the same for features. Prints per run the training steps actually run, the wall time, the final
hypervolume (same reference point: the study's) and the front size; then the mean +- standard
error over seeds and the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from search_space import EarlyStopping, RandomDraw, Sinks, compile_space, load
from trials import FeatureCache, OptunaBackend, SearchSpec, TrialOptions, run_trial


def warm_cache(space, cache_dir: Path, draws: int = 200) -> int:
    """Extract features once for every expert configuration that `draws` random points use."""
    compiled, seen = compile_space(space), set()
    cache = FeatureCache(cache_dir)
    for seed in range(draws):
        point = compiled.sample(RandomDraw(seed))
        key = tuple(sorted((n, e.model_dump_json()) for n, e in point.experts.items()))
        if any((n, cfg) not in seen for n, cfg in key):
            run_trial(point, TrialOptions(steps=1, cache=cache))
            seen.update(key)
    return len(seen)


def run(space, text: str, root: Path, seed: int, stopping: str, trials: int) -> dict[str, float]:
    search = space.search.model_copy(update={"seed": seed, "trials": trials})
    if stopping == "none":
        search = search.model_copy(update={"early_stopping": EarlyStopping(kind="none")})
    variant = space.model_copy(update={"search": search})
    study = f"{space.name}-{stopping}-{seed}"
    spec = SearchSpec(study=study, space=variant, space_yaml=text, trials=trials,
                      concurrency=search.concurrency, storage=f"sqlite:///{root}/{study}.db", run_dir=root)
    start = time.perf_counter()
    backend = OptunaBackend(spec, Sinks([]))
    backend.prepare()
    state = backend.run()
    wall = time.perf_counter() - start
    results = list(state.results.values())
    return {"steps": float(sum(r.steps for r in results if r.reused_from is None)), "wall": wall,
            "hv": state.front.hypervolume, "front": float(len(state.front.pareto)),
            "complete": float(sum(r.status == "complete" for r in results)),
            "pruned": float(sum(r.status == "pruned" for r in results))}


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} +- {statistics.stdev(values) / len(values) ** 0.5:.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="examples/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=None, help="default: the space's search.trials")
    args = parser.parse_args()
    loaded = load(args.space)
    space, text = loaded.space, Path(args.space).read_text(encoding="utf-8")
    trials = args.trials or space.search.trials
    stopping = space.search.early_stopping.kind
    rows: dict[str, list[dict[str, float]]] = {stopping: [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"warmed the feature cache for {warm_cache(space, root / 'cache')} expert configurations",
              flush=True)
        for i, seed in enumerate(args.seeds):
            order = [stopping, "none"] if i % 2 == 0 else ["none", stopping]
            for kind in order:
                row = run(space, text, root, seed, kind, trials)
                rows[kind].append(row)
                print(f"seed {seed} {kind:8s}: {row['steps']:7.0f} steps  {row['wall']:6.1f} s  "
                      f"hv {row['hv']:8.4g}  front {row['front']:.0f}  complete {row['complete']:.0f}  "
                      f"pruned {row['pruned']:.0f}", flush=True)
    print(f"\n{space.name}: {trials} trials x {len(args.seeds)} seeds, sampler {space.search.sampler}, "
          f"concurrency {space.search.concurrency}")
    for kind, found in rows.items():
        stats = {key: mean_se([r[key] for r in found]) for key in ("steps", "wall", "hv", "front")}
        print(f"{kind:8s}: steps {stats['steps']}, wall {stats['wall']} s, hypervolume {stats['hv']}, "
              f"front {stats['front']}")
    pairs = list(zip(rows[stopping], rows["none"], strict=True))
    steps = statistics.mean(full["steps"] / early["steps"] for early, full in pairs)
    wall = statistics.mean(full["wall"] / early["wall"] for early, full in pairs)
    volume = statistics.mean(early["hv"] / full["hv"] for early, full in pairs)
    print(f"none / {stopping}: steps {steps:.2f}x, wall {wall:.2f}x; hypervolume {stopping} / none: "
          f"{volume:.3f} (mean of per-seed ratios)")


if __name__ == "__main__":
    main()
