"""Host memory of a trial whose cached expert features are gigabytes: peak RSS growth vs. bytes.

    python bench/cache_rss.py [--train 1400] [--eval 200] [--image-size 512] [--steps 4]

The point taps tiny-convnext's two stride-4 maps (layers 0 and 1, 16 channels each) at
`--image-size` with no token reduction, over the probe's 64 px images, so each image caches
2 x (size/4)^2 x 16 fp32 values (2 MiB at 512 px; 1600 images: 3.4 GB) for little compute, and
fuses them with a 4-query resampler so the LM stays small. Each phase runs in a fresh process:
"cold" computes and writes the features (empty cache), "warm" reads them back (disk hits). Peak
RSS is the kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs where allowed,
else psutil sampled every 10 ms), minus the RSS just before the trial (modules imported).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def point_dict(train: int, evaluation: int, image_size: int, steps: int) -> dict[str, object]:
    return {"name": "bench-cache-rss",
            "data": {"benchmark": "probe", "train_size": train, "eval_size": evaluation, "image_size": 64},
            "experts": {"c": {"source": "tiny-convnext", "layers": [0, 1], "image_size": image_size,
                              "tokens": None}},
            "fusion": {"kind": "resampler", "queries": 4, "depth": 1}, "positions": "original",
            "train": {"steps": steps, "batch_size": 8, "lr": 1e-3}}


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


class PeakRSS:
    """Peak RSS over a block: VmHWM after resetting it, else the max of psutil samples."""

    def __init__(self) -> None:
        import psutil

        self.process, self.samples_peak = psutil.Process(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.kernel = False

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.samples_peak = max(self.samples_peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            self.kernel = True
        except OSError:
            self.kernel = False
        self.start = self.samples_peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.samples_peak, _status_bytes("VmHWM") if self.kernel else 0)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def phase(args: argparse.Namespace) -> dict[str, object]:
    """One trial in this process; what it cost in host memory and time."""
    import torch

    from search_space import DataConfig, TrialConfig
    from trials import FeatureCache, TrialOptions, load_benchmark, run_trial

    torch.set_num_threads(args.threads)
    load_benchmark(DataConfig(train_size=6, eval_size=6))  # imports and tables every trial pays once
    point = TrialConfig.model_validate(point_dict(args.train, args.eval, args.image_size, args.steps))
    cache = FeatureCache(args.cache)
    start = time.perf_counter()
    with PeakRSS() as rss:
        result = run_trial(point, TrialOptions(cache=cache, device="cpu", eval_batch=8))
    wall = time.perf_counter() - start
    assert result.status == "complete", result.failure
    return {"phase": args.phase, "feature_bytes": cache.disk_bytes(), "start_rss": rss.start,
            "peak_rss": rss.peak, "growth": rss.growth, "kernel_peak": rss.kernel, "wall_s": wall,
            "misses": cache.stats.misses, "disk_hits": cache.stats.disk_hits}


def run_phase(name: str, args: argparse.Namespace, cache: str) -> dict[str, object]:
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--cache", cache,
               "--train", str(args.train), "--eval", str(args.eval), "--image-size", str(args.image_size),
               "--steps", str(args.steps), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """Cold then warm, each in a fresh process, over one temporary cache directory."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as cache:
        return [run_phase(name, args, cache) for name in ("cold", "warm")]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1400)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="where the temporary cache directory goes")
    parser.add_argument("--json", action="store_true", help="print the phases as one JSON line")
    parser.add_argument("--phase", choices=["cold", "warm"], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.phase:
        print(json.dumps(phase(args)))
        return
    phases = measure(args)
    if args.json:
        print(json.dumps(phases))
        return
    print(f"tiny-convnext layers 0+1 @ {args.image_size} px, tokens: null; probe {args.train} train + "
          f"{args.eval} eval images; {args.steps} steps; {args.threads} threads")
    for p in phases:
        print(f"{p['phase']:4}  features {p['feature_bytes'] / 1e9:6.2f} GB  peak RSS growth "
              f"{p['growth'] / 2**20:7.1f} MiB  (from {p['start_rss'] / 2**20:.0f} MiB, "
              f"{'VmHWM' if p['kernel_peak'] else 'sampled'})  wall {p['wall_s']:6.1f} s  "
              f"misses {p['misses']} disk hits {p['disk_hits']}")
    worst = max(int(p["growth"]) for p in phases)
    print(f"growth / feature bytes = {worst / max(1, int(phases[0]['feature_bytes'])):.3f}")


if __name__ == "__main__":
    main()
