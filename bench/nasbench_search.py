"""Search efficiency on tables nobody here wrote (NAS-Bench-201 on CIFAR-10, CIFAR-100 and
ImageNet16-120; HPOBench; HPOLib; bench/tables.py): vlmsearch's samplers against random search,
side by side, measured against each table's true Pareto front.

    python bench/nasbench_search.py [--tables nb201-cifar10 ...] [--seeds 10] [--trials 200]
                                    [--methods defaults random optuna-tpe ...] [--record F] [--quick]

Each table is a space YAML of examples/ (two objectives). Each (table, method, seed) runs one
search of `--trials` trials through vlmsearch's own machinery, in process: the compiled space
sampled by Optuna's define-by-run ask (`OptunaDraw`), the sampler built by vlmsearch's sampler
registry from the YAML's `search:` settings, each point evaluated by the space's evaluator
(`trials.train.run_trial`, one training seed per design, as a real search sees), repeats of an
already-trained design reused as `vlmsearch run` does (`StudyState`), and the study told the
objective values. `--quick` is a smoke run (2 seeds, 25 trials, random and defaults). Methods:

- `defaults`: vlmsearch's default sampler (the tables' YAMLs set none): `auto`
- vlmsearch's registry entries by name: `auto`, `tpe`, `gp`, `nsga2`, `random` (`random` is
  also the baseline every method is paired with)
- peers with their own defaults: `optuna-tpe`, `optuna-gp`, `optuna-nsga2` (Optuna's samplers
  as constructed with a seed alone); `smac` (SMAC3, ParEGO) and `morea` (Syne Tune) through
  their ask/tell interfaces (bench/peers.py; `pip install -c constraints/cpu.txt -r
  bench/requirements-peers.txt`)

Score (bench/tables.py): the hypervolume of the designs found so far, each at its mean values
over the benchmark's training seeds (its expected value, not the draw the search saw), divided by
the hypervolume of the true front (every configuration enumerated), one reference point per table
(the worst mean of each objective). Printed per table after 25/50/100/200 trials as mean +-
standard error over seeds, with the trials each run needed to reach 95% of the true
hypervolume, each method paired by seed against random search, and `defaults` paired with the
best peer (highest mean) at each checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one BLAS thread a search: two harness processes on two cores otherwise oversubscribe them
# (a 200-trial FlatBO search took 511 s beside another run, 73 s for 150 trials alone)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from peers import PEERS, peer_sampler, version
from tables import TABLES, Scorer

CHECKPOINTS = (25, 50, 100, 200)
TARGET = 0.95
QUICK = {"seeds": 2, "trials": 25, "methods": ["random", "defaults"]}
# Optuna's samplers with their own defaults (vlmsearch's registry entries of the same kinds are
# `tpe`, `gp`, `nsga2`: start-up, grouping and population chosen by vlmsearch)
OPTUNA_PEERS = {
    "optuna-tpe": lambda seed: __import__("optuna").samplers.TPESampler(seed=seed),
    "optuna-gp": lambda seed: __import__("optuna").samplers.GPSampler(seed=seed),
    "optuna-nsga2": lambda seed: __import__("optuna").samplers.NSGAIISampler(seed=seed),
}
PEER_METHODS = {"random", *OPTUNA_PEERS, *PEERS}  # not vlmsearch's: what `defaults` is measured against


def spec_for(loaded, method: str, seed: int, trials: int, run_dir: Path):
    from search_space import SAMPLERS
    from trials import SearchSpec

    # the tables' YAMLs leave `sampler:` out, so theirs is vlmsearch's default
    default = loaded.space.search.sampler
    # a peer's own sampler replaces the registry's (sampler_of); "random" only fills the field
    sampler = default if method == "defaults" else method if method in SAMPLERS else "random"
    space = loaded.space.model_copy(update={"search": loaded.space.search.model_copy(
        update={"sampler": sampler, "seed": seed, "trials": trials, "concurrency": 1})})
    return SearchSpec(study=f"{method}-{seed}", space=space, space_yaml="", trials=trials,
                      concurrency=1, storage="", run_dir=run_dir)


def sampler_of(method: str, spec):
    import optuna

    from search_space import OptunaDraw, compile_space
    from trials import OPTUNA_SAMPLERS

    seed = spec.space.search.seed
    if method in OPTUNA_PEERS:
        return OPTUNA_PEERS[method](seed)
    compiled = compile_space(spec.space)
    if method in PEERS:  # the space's distributions, as one define-by-run draw records them
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        compiled.sample(OptunaDraw(probe))
        return peer_sampler(method, probe.distributions, [o.direction for o in spec.space.objectives],
                            seed, spec.trials)
    subsets = len(compiled.subsets)  # as the backends pass it (1: no expert pool)
    return OPTUNA_SAMPLERS.get(spec.space.search.sampler)(spec.trials, 0, seed, subsets)


def one_search(loaded, method: str, seed: int, trials: int, scorer: Scorer) -> dict:
    """One search; the ratio after each trial, the seconds it took, and the sampler's seconds
    (ask and draw, where Optuna calls the sampler) over all trials and on each of the last ten."""
    import optuna

    from search_space import OptunaDraw, Sinks
    from trials import StudyState, objective_values, run_trial

    spec = spec_for(loaded, method, seed, trials, Path("."))
    state = StudyState(spec, Sinks([]))
    study = optuna.create_study(directions=[o.direction for o in spec.space.objectives],
                                sampler=sampler_of(method, spec))
    designs, ratios, sampling = [], [], []
    start = time.perf_counter()
    for number in range(trials):
        asked = time.perf_counter()
        trial = study.ask()
        point = state.compiled.sample(OptunaDraw(trial))
        sampling.append(time.perf_counter() - asked)
        result = state.settled_before_training(point, number)
        if result is None:
            result = replace(run_trial(point), study=spec.study, number=number)
        state.finish(result)
        study.tell(trial, objective_values(spec.space, result.metrics))
        designs.append(dict(point.parameters))
        ratios.append(scorer.ratio(designs))
    return {"ratios": ratios, "seconds": time.perf_counter() - start, "trials": trials,
            "sampler_s": sum(sampling), "sampler_last10_s": statistics.fmean(sampling[-10:])}


def sampler_cell(results: list[dict]) -> str:
    """The sampler's mean seconds per trial over each run's own length, and on its last ten
    trials (runs that recorded it)."""
    timed = [r for r in results if "sampler_s" in r]
    if not timed:
        return "-"
    return (f"{statistics.fmean(r['sampler_s'] / r['trials'] for r in timed):.3f} / "
            f"{statistics.fmean(r['sampler_last10_s'] for r in timed):.3f}")


def trials_to(ratios: list[float], target: float) -> int | None:
    return next((i + 1 for i, r in enumerate(ratios) if r >= target), None)


def mean_se(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def report(runs: dict[str, list[dict]], trials: int) -> dict[int, bool] | None:
    points = [c for c in CHECKPOINTS if c <= trials]
    print("\nhypervolume / true front's hypervolume (mean +- s.e. over seeds); trials to reach 95% "
          "(median, and how many runs reached it)")
    head = "".join(f"{f'@{c}':>18}" for c in points)
    print(f"{'method':<10}{'seeds':>6}{head}{'to 95%':>18}{'s/search':>10}{'sampler s/trial':>17}")
    table = {}
    for method, results in runs.items():
        cells, table[method] = [], {}
        for c in points:
            m, se = mean_se([r["ratios"][c - 1] for r in results])
            table[method][c] = m
            cells.append(f"{m:.4f} +- {se:.4f}".rjust(18))
        reached = [t for t in (trials_to(r["ratios"], TARGET) for r in results) if t is not None]
        median = f"{statistics.median(reached):.0f}" if reached else "-"
        secs = statistics.fmean(r["seconds"] for r in results)
        print(f"{method:<10}{len(results):>6}{''.join(cells)}"
              f"{f'{median} ({len(reached)}/{len(results)})':>18}{secs:>10.1f}{sampler_cell(results):>17}")
    if "random" in table:
        print("\nthe gap to the true front, relative to random search's (1 - ratio) / (1 - random's)")
        for method in table:
            gaps = [(1 - table[method][c]) / max(1e-12, 1 - table["random"][c]) for c in points]
            print(f"{method:<16}" + "".join(f"{g:>18.2f}" for g in gaps))
        paired(runs, points, trials)
    return versus_best_peer(runs, points)


def versus_best_peer(runs: dict[str, list[dict]], points: list[int]) -> dict[int, bool] | None:
    """`defaults` against the peer with the highest mean at each checkpoint, paired by seed;
    ahead (True) when the mean paired difference is >= 0."""
    peers = [m for m in runs if m in PEER_METHODS]
    if "defaults" not in runs or not peers:
        return None
    mine = {r["seed"]: r["ratios"] for r in runs["defaults"]}
    print("\ndefaults - the best peer at each checkpoint, paired by seed (mean +- s.e., seeds ahead)")
    ahead = {}
    for c in points:
        best = max(peers, key=lambda m: statistics.fmean(r["ratios"][c - 1] for r in runs[m]))
        diff = [mine[r["seed"]][c - 1] - r["ratios"][c - 1] for r in runs[best] if r["seed"] in mine]
        m, se = mean_se(diff)
        ahead[c] = m >= 0
        print(f"  @{c:<4} vs {best:<13} {m:+.4f} +- {se:.4f} ({sum(d >= 0 for d in diff)}/{len(diff)})"
              f"  {'ahead' if ahead[c] else 'behind'}")
    return ahead


def paired(runs: dict[str, list[dict]], points: list[int], trials: int) -> None:
    """Each method against random search on the same seed (same first draws)."""
    random = {r["seed"]: r["ratios"] for r in runs["random"]}
    print(f"\npaired by seed, method - random (mean +- s.e., seeds better); trials to reach random's "
          f"{trials}-trial ratio on the same seed (median; runs that got there)")
    for method, results in runs.items():
        if method == "random":
            continue
        mine = [r for r in results if r["seed"] in random]
        cells = []
        for c in points:
            diff = [r["ratios"][c - 1] - random[r["seed"]][c - 1] for r in mine]
            m, se = mean_se(diff)
            cells.append(f"{m:+.4f} +- {se:.4f} ({sum(d > 0 for d in diff)}/{len(diff)})".rjust(26))
        reach = [t for t in (trials_to(r["ratios"], random[r["seed"]][trials - 1]) for r in mine)
                 if t is not None]
        median = f"{statistics.median(reach):.0f}" if reach else "-"
        print(f"{method:<10}{''.join(cells)}{f'{median} ({len(reach)}/{len(mine)})':>14}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--methods", nargs="+", default=["random", "defaults", "optuna-tpe", "optuna-nsga2",
                                                         "smac", "morea"])
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {QUICK['seeds']} seeds, {QUICK['trials']} trials, "
                             f"methods {' '.join(QUICK['methods'])} (on the tables given)")
    parser.add_argument("--record", default=None,
                        help="a JSON-lines file each finished run is appended to (a run already "
                             "in it is not repeated); the report then covers every run in it")
    args = parser.parse_args()

    if args.quick:
        args.seeds, args.trials, args.methods = QUICK["seeds"], QUICK["trials"], QUICK["methods"]
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    record = Path(args.record) if args.record else None
    done = [json.loads(line) for line in record.read_text().splitlines()] \
        if record and record.exists() else []
    from search_space import SAMPLERS

    known = {"defaults", *SAMPLERS.names(), *OPTUNA_PEERS, *PEERS}
    unknown = [m for m in args.methods if m not in known]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    used = [m for m in args.methods if m in PEERS]
    missing = [m for m in used if version(m) == "-"]
    if missing:
        parser.error(f"{', '.join(missing)} not installed: pip install -c constraints/cpu.txt "
                     "-r bench/requirements-peers.txt")
    if used:
        print("peers: " + ", ".join(f"{m} ({version(m)})" for m in used))
    summary: dict[str, dict[int, bool] | None] = {}
    for name in args.tables:
        scorer = Scorer(name)
        print(f"\n{scorer.describe()}; true front hypervolume {scorer.best:.6g}; "
              f"{args.trials} trials x {args.seeds} seeds per method")
        runs = search_table(scorer, args, [r for r in done if r.get("table", "nb201-cifar10") == name],
                            record)
        summary[name] = report({m: runs[m] for m in [*args.methods, *runs] if m in runs}, args.trials)
    ahead = {n: a for n, a in summary.items() if a}
    if len(ahead) > 1:
        print("\ndefaults at least as good as the best peer (paired mean), tables of "
              f"{len(ahead)}: " + ", ".join(f"@{c} {sum(a[c] for a in ahead.values())}"
                                             for c in next(iter(ahead.values()))))


def search_table(scorer: Scorer, args: argparse.Namespace, done: list[dict],
                 record: Path | None) -> dict[str, list[dict]]:
    """Every (method, seed) of one table: those in the record reused, the others run."""
    runs: dict[str, list[dict]] = {}
    for run in done:
        if len(run["ratios"]) >= args.trials:
            runs.setdefault(run["method"], []).append({**run, "ratios": run["ratios"][:args.trials]})
    for method in args.methods:
        for seed in range(args.seeds):
            if any(r["seed"] == seed for r in runs.get(method, [])):
                continue
            run = {"table": scorer.name, "method": method, "seed": seed,
                   **one_search(scorer.loaded, method, seed, args.trials, scorer)}
            runs.setdefault(method, []).append(run)
            if record:
                with record.open("a") as handle:
                    handle.write(json.dumps(run) + "\n")
            print(f"  {method:<9} seed {seed}: @{args.trials} {run['ratios'][-1]:.4f}, to 95%: "
                  f"{trials_to(run['ratios'], TARGET)}, {run['seconds']:.1f} s", flush=True)
    return runs

if __name__ == "__main__":
    main()
