"""How far a short training budget can be trusted: design rankings at S steps vs 4S steps.

    python bench/proxy_fidelity.py [--designs 12] [--short 75] [--ratio 4] [--space examples/quickstart.yaml]

Designs are drawn from the space so that every fusion operator appears (two designs each for the
quickstart's six), with the learning rate fixed at 1e-3 so that only the design differs. Each
design trains twice, at `--short` steps and at `--ratio` x as many, with one shared feature cache
(warmed first, so both budgets pay the same); the two runs of a design are back to back. Prints
each design's accuracy and rank under both budgets, Kendall's tau and Spearman's rho between the
rankings, and what moves: designs whose rank changes by 3 or more, and the mean rank per fusion
operator, position scheme and expert count under each budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import kendalltau, spearmanr

from search_space import RandomDraw, TrialConfig, compile_space, load
from trials import FeatureCache, TrialOptions, run_trial


def pick_designs(space_path: str, count: int, lr: float) -> list[TrialConfig]:
    """`count` distinct designs, spread evenly over the fusion operators the space offers."""
    space = load(space_path).space
    compiled = compile_space(space)
    kinds = sorted({f["kind"] if isinstance(f, dict) else f.kind for f in space.fusion_options()})
    per_kind = {k: count // len(kinds) + (1 if i < count % len(kinds) else 0) for i, k in enumerate(kinds)}
    chosen: dict[str, TrialConfig] = {}
    seed = 0
    while sum(per_kind.values()) and seed < 100_000:
        point = compiled.sample(RandomDraw(seed))
        seed += 1
        point = point.model_copy(update={"train": point.train.model_copy(update={"lr": lr})})
        kind = point.fusion.kind
        if per_kind.get(kind, 0) and point.config_hash not in chosen:
            chosen[point.config_hash] = point
            per_kind[kind] -= 1
    return list(chosen.values())


def describe(point: TrialConfig) -> str:
    return f"{'+'.join(point.experts)} | {point.fusion.kind} | {point.positions} | {point.projector}"


def ranks(values: list[float]) -> list[int]:
    """1 = best (highest accuracy); ties share the better rank."""
    ordered = sorted(values, reverse=True)
    return [ordered.index(v) + 1 for v in values]


def mean_rank_by(points: list[TrialConfig], rank: list[int], key) -> dict[str, float]:
    groups: dict[str, list[int]] = defaultdict(list)
    for point, r in zip(points, rank, strict=True):
        groups[key(point)].append(r)
    return {k: statistics.mean(v) for k, v in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", type=int, default=12)
    parser.add_argument("--short", type=int, default=75)
    parser.add_argument("--ratio", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--space", default="examples/quickstart.yaml")
    args = parser.parse_args()
    points = pick_designs(args.space, args.designs, args.lr)
    long_steps = args.short * args.ratio
    short_acc, long_acc, seconds = [], [], {"short": 0.0, "long": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp) / "cache")
        for point in points:  # warm the cache: both budgets then read the same stored features
            run_trial(point, TrialOptions(steps=1, cache=cache))
        for i, point in enumerate(points, 1):
            for label, steps, into in (("short", args.short, short_acc), ("long", long_steps, long_acc)):
                start = time.perf_counter()
                result = run_trial(point, TrialOptions(steps=steps, cache=cache))
                seconds[label] += time.perf_counter() - start
                into.append(result.metrics.get("accuracy", float("nan")) if result.status == "complete"
                            else float("nan"))
            print(f"[{i}/{len(points)}] {describe(point)}: {short_acc[-1]:.3f} at {args.short} steps, "
                  f"{long_acc[-1]:.3f} at {long_steps}", flush=True)
    short_rank, long_rank = ranks(short_acc), ranks(long_acc)
    tau, tau_p = kendalltau(short_acc, long_acc)
    rho, rho_p = spearmanr(short_acc, long_acc)
    print(f"\n{len(points)} designs of {args.space}, lr {args.lr}: {args.short} vs {long_steps} steps "
          f"(training time {seconds['short']:.0f} s vs {seconds['long']:.0f} s)")
    print(f"{'design':58s} {'acc S':>6s} {'rank':>4s} {'acc 4S':>6s} {'rank':>4s}")
    for p, a, ra, b, rb in sorted(zip(points, short_acc, short_rank, long_acc, long_rank, strict=True),
                                  key=lambda row: row[4]):
        print(f"{describe(p):58s} {a:6.3f} {ra:4d} {b:6.3f} {rb:4d}")
    print(f"\nKendall tau {tau:.3f} (p {tau_p:.3g}); Spearman rho {rho:.3f} (p {rho_p:.3g})")
    top = max(1, len(points) // 4)
    kept = len(set(sorted(range(len(points)), key=lambda i: short_rank[i])[:top])
               & set(sorted(range(len(points)), key=lambda i: long_rank[i])[:top]))
    print(f"top {top} at {args.short} steps that stay top {top} at {long_steps}: {kept}")
    moved = [(describe(p), a, b) for p, a, b in zip(points, short_rank, long_rank, strict=True)
             if abs(a - b) >= 3]
    print("rank moves of 3 or more: " + ("; ".join(f"{d}: {a} -> {b}" for d, a, b in moved) or "none"))
    for name, key in (("fusion", lambda p: p.fusion.kind), ("positions", lambda p: p.positions),
                      ("experts", lambda p: f"{len(p.experts)} expert(s)")):
        short_by, long_by = mean_rank_by(points, short_rank, key), mean_rank_by(points, long_rank, key)
        print(f"mean rank by {name} (S -> 4S): " + ", ".join(
            f"{k} {short_by[k]:.1f} -> {long_by[k]:.1f}" for k in short_by))


if __name__ == "__main__":
    main()
