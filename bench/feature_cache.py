"""Cold vs warm feature cache for one 3-expert trial, measured side by side in one run.

    python bench/feature_cache.py [--steps 300] [--device auto] [--repeats 1]

The point has tiny-clip, tiny-dinov2 and tiny-sam on the probe at the quickstart's sizes
(2000 train / 400 eval images at 96 px). "cold" starts from an empty cache directory, so every
expert runs over both splits; "warm" is the same trial in a fresh cache object over the same
directory (what a second trial or a second process sees: disk hits, no expert forward).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from search_space import TrialConfig
from trials import FeatureCache, TrialOptions, run_trial

POINT = {
    "name": "bench-3-experts",
    "data": {"benchmark": "probe", "train_size": 2000, "eval_size": 400, "image_size": 96},
    "experts": {"clip": {"source": "tiny-clip", "layers": [-1, -2, -3], "tokens": 16},
                "dinov2": {"source": "tiny-dinov2", "tokens": 64},
                "sam": {"source": "tiny-sam", "image_size": 128, "tokens": 16}},
    "fusion": {"kind": "sequence_concat"}, "positions": "share_by_row",
    "train": {"steps": 300, "batch_size": 32, "lr": 1e-3},
}


def timed(point: TrialConfig, root: str, device: str) -> tuple[float, FeatureCache, float]:
    cache = FeatureCache(root)
    start = time.perf_counter()
    result = run_trial(point, TrialOptions(cache=cache, device=device))
    assert result.status == "complete", result.failure
    return time.perf_counter() - start, cache, result.metrics["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    point = TrialConfig.model_validate({**POINT, "train": {**POINT["train"], "steps": args.steps}})
    print(f"3-expert point {point.config_hash}, {args.steps} steps, device {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as root:
            cold, cold_cache, acc_cold = timed(point, root, args.device)
            warm, warm_cache, acc_warm = timed(point, root, args.device)
            size = warm_cache.disk_bytes() / 2**20
        print(f"cold {cold:7.1f} s  (misses {cold_cache.stats.misses}, accuracy {acc_cold:.3f})")
        print(f"warm {warm:7.1f} s  (disk hits {warm_cache.stats.disk_hits}, accuracy {acc_warm:.3f},"
              f" cache {size:.1f} MiB)")
        print(f"cold / warm = {cold / warm:.2f}x")


if __name__ == "__main__":
    main()
