"""Host memory of a LLaVA-665K-shaped data set read through the Arrow records: peak RSS growth.

    python bench/llava_records.py [--records 100000] [--train-size 2000] [--steps 3] [--no-train]

Writes a `--records` LLaVA-format file (tests/llava_files.py: multi-turn conversations, 6%
text-only records, 8x6 px images each shared by 500 records, answers padded to ~1 KB a record),
then measures each phase in a fresh process (peak RSS: VmHWM reset through /proc/self/clear_refs,
see bench/cache_rss.py, minus the RSS after imports):

- json:  the old loader's first step, `json.loads` of the whole file (for scale)
- build: `read_records` on an empty datasets cache (stream with ijson, validate, write Arrow)
- load:  `load_llava` from the cached table (group split, image checks, eval QA, candidates) and
         every turn of the train split read through its TurnSource
- all:   the same with train_size = every record but 3 images' worth (the largest split that
         leaves whole image groups for eval)
- train: `run_trial` of a tiny point (tiny-clip + tiny-llama) on `--train-size` records, `--steps`
         steps (skip with --no-train while the trainer does not take a ChatDataset)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cache_rss import PeakRSS  # noqa: E402 - after the path

EVAL_SIZE = 100
SHARE = 500      # records per image
PHASES = ("json", "build", "load", "all", "train")


def data_config(path: Path, train_size: int) -> Any:
    from search_space import DataConfig

    return DataConfig.model_validate({"benchmark": "llava", "path": str(path), "image_folder":
                                      str(path.parent / "images"), "train_size": train_size,
                                      "eval_size": EVAL_SIZE, "image_size": 32})


def point_dict(path: Path, train_size: int, steps: int) -> dict[str, Any]:
    data = data_config(path, train_size).model_dump(exclude_defaults=True)
    return {"name": "bench-llava-records", "data": data,
            "language_model": {"source": "tiny-llama", "train": "full"},
            "experts": {"clip": {"source": "tiny-clip", "tokens": 4}}, "positions": "original",
            "train": {"steps": steps, "batch_size": 8, "lr": 1e-3}}


def _json(args: argparse.Namespace) -> dict[str, Any]:
    with PeakRSS() as rss:
        records = json.loads(Path(args.file).read_text())
    return {"rss": rss, "records": len(records)}


def _build(args: argparse.Namespace) -> dict[str, Any]:
    from trials import read_records

    with PeakRSS() as rss:
        table = read_records(Path(args.file))
    return {"rss": rss, "records": len(table), "arrow_bytes": sum(Path(f["filename"]).stat().st_size
                                                                  for f in table.cache_files)}


def _load(args: argparse.Namespace, train_size: int) -> dict[str, Any]:
    from trials import load_llava

    with PeakRSS() as rss:
        train, evaluation = load_llava(data_config(Path(args.file), train_size))
        turns = sum(len(train.turns[i]) for i in range(len(train)))
    return {"rss": rss, "train": len(train), "eval": len(evaluation), "turns": turns,
            "text_only": len(train) - sum(train.has_image)}


def _train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from search_space import TrialConfig
    from trials import FeatureCache, TrialOptions, run_trial

    torch.set_num_threads(2)
    point = TrialConfig.model_validate(point_dict(Path(args.file), args.train_size, args.steps))
    with tempfile.TemporaryDirectory() as cache, PeakRSS() as rss:
        result = run_trial(point, TrialOptions(cache=FeatureCache(cache), device="cpu", eval_batch=8))
    assert result.status == "complete", result.failure
    return {"rss": rss, "steps": result.steps, "accuracy": result.metrics.get("accuracy")}


RUNS = {"json": _json, "build": _build, "load": lambda a: _load(a, a.train_size),
        "all": lambda a: _load(a, a.records - 3 * SHARE - EVAL_SIZE), "train": _train}


def resident() -> dict[str, int]:
    """Resident bytes now: anonymous (heap) and file-backed (memory-mapped Arrow pages, which the
    kernel may drop and read again)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {name: int(status[name].split()[0]) * 1024 for name in ("RssAnon", "RssFile")}


def phase(args: argparse.Namespace) -> dict[str, Any]:
    import datasets  # noqa: F401 - imports every phase pays, before it is measured
    import pyarrow.compute  # noqa: F401

    from trials import load_benchmark  # noqa: F401 - trials.data and its loaders

    start, before = time.perf_counter(), resident()
    found = RUNS[args.phase](args)
    after = resident()
    rss = found.pop("rss")
    return {"phase": args.phase, "growth": rss.growth, "start_rss": rss.start, "kernel_peak": rss.kernel,
            "wall_s": time.perf_counter() - start, "anon_end": after["RssAnon"] - before["RssAnon"],
            "file_end": after["RssFile"] - before["RssFile"], **found}


def run_phase(name: str, args: argparse.Namespace, file: Path, cache: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--file", str(file),
               "--records", str(args.records), "--train-size", str(args.train_size),
               "--steps", str(args.steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_CACHE": cache}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"phase {name} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> tuple[int, list[dict[str, Any]]]:
    from tests.llava_files import write_llava_set

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        start = time.perf_counter()
        file = write_llava_set(Path(tmp) / "set", n=args.records, text_only=args.records * 6 // 100,
                               share=SHARE, words=240)
        print(f"wrote {args.records:,} records ({file.stat().st_size / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        names = [p for p in PHASES if p != "train" or args.train]
        return file.stat().st_size, [run_phase(p, args, file, str(Path(tmp) / "hf-cache")) for p in names]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the train phase")
    parser.add_argument("--tmp", default=None, help="where the temporary data set goes")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.phase:
        print(json.dumps(phase(args)))
        return
    size, phases = measure(args)
    shown = ("phase", "growth", "start_rss", "kernel_peak", "wall_s", "anon_end", "file_end")
    for p in phases:
        extra = {k: v for k, v in p.items() if k not in shown}
        print(f"{p['phase']:5}  peak RSS growth {p['growth'] / 2**20:7.1f} MiB  (from "
              f"{p['start_rss'] / 2**20:.0f} MiB, {'VmHWM' if p['kernel_peak'] else 'sampled'})  x file "
              f"{p['growth'] / size:5.2f}  at the end: heap +{p['anon_end'] / 2**20:.0f} MiB, mapped file "
              f"+{p['file_end'] / 2**20:.0f} MiB  wall {p['wall_s']:6.1f} s  {json.dumps(extra)}")
    records = [p for p in phases if p["phase"] != "json"]
    worst = max(records, key=lambda p: p["growth"])
    old = next(p for p in phases if p["phase"] == "json")
    print(f"worst phase through the records: {worst['phase']} {worst['growth'] / 2**20:.1f} MiB "
          f"({'under' if worst['growth'] < 2**30 else 'OVER'} the 1 GiB target); json.loads alone / worst = "
          f"{old['growth'] / max(1, worst['growth']):.2f}x")


if __name__ == "__main__":
    main()
