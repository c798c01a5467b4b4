"""`vlmsearch check` on big pools (issue 19, class 10): 12 experts, subsets up to 6 and up to 12.

    python bench/check_speed.py [--repeats 3] [--before TREE]

`--before`: a checkout of an earlier commit (git worktree add /tmp/before REV), whose checks run
interleaved with this tree's, for the ratio.

Each check runs as a user runs it (a fresh `vlmsearch check` process, imports included), beside
the quickstart's check in the same run (these machines are noisy: the quickstart is the yardstick),
and the median of `--repeats` runs is printed with the load average at the time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.search_space.big_pool import pool_space  # noqa: E402


def seconds(path: Path, tree: Path) -> float:
    """One `vlmsearch check` of `path` with the code of `tree` (`python -m` imports from its cwd)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "vlmsearch", "check", str(path.resolve())],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tree)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args()
    trees = {"this tree": ROOT, **({"before": args.before} if args.before else {})}
    with tempfile.TemporaryDirectory() as folder:
        files = {"quickstart": ROOT / "examples" / "quickstart.yaml"}
        for largest in (6, 12):
            files[f"12 experts, subsets <= {largest}"] = Path(folder) / f"pool{largest}.yaml"
            files[f"12 experts, subsets <= {largest}"].write_text(pool_space(largest))
        times: dict[tuple[str, str], list[float]] = {(t, n): [] for t in trees for n in files}
        for _ in range(args.repeats):  # interleaved, so load falls on every run alike
            for (tree, name) in times:
                times[(tree, name)].append(seconds(files[name], trees[tree]))
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats} runs")
    for (tree, name), runs in times.items():
        median = statistics.median(runs)
        base = statistics.median(times[(tree, "quickstart")])
        ratio = f"; {median / statistics.median(times[('before', name)]):.2f}x before" if args.before else ""
        print(f"  {tree:9s} {name:28s} {median:6.2f} s  ({median / base:.2f}x its quickstart check{ratio})")


if __name__ == "__main__":
    main()
