"""How close the resource model is to the VLM it describes, design by design, in one run.

    python bench/resource_model.py            # the papers' designs (meta device) + small ones (CPU)
    python bench/resource_model.py --quick    # two of each

Paper-scale designs (examples/papers/*.yaml: LLaVA-1.5, MouSi, COMM, Mini-Gemini, LLaVA-HR,
Cambrian, EAGLE, at 7B-13B) are built from their configs with random weights on the meta device:
parameters are counted on the model and the FLOPs of one training step (one sample) by
FlopCounterMode. Small designs of the same families and operators run on real CPU tensors, where
the bytes autograd saves for backward per sample are measured too (the paper-scale activations
come from the same formulas). Ratios are measured / predicted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transformers

from search_space import TrialConfig, load_point
from trials import SMALL_DESIGNS, measure_step, predict_step

transformers.utils.logging.set_verbosity_error()
ROOT = Path(__file__).resolve().parents[1]
TEXT_TOKENS = 48


def _row(name: str, point: TrialConfig, on_cpu: bool) -> str:
    start = time.perf_counter()
    m, p = measure_step(point, TEXT_TOKENS, on_cpu=on_cpu), predict_step(point, TEXT_TOKENS)
    params = "exact" if (m.trainable, m.total) == (p.trainable, p.total) else (
        f"{m.total}/{p.total}")
    saved = f"{m.saved / p.saved:.3f}" if m.saved is not None else "-"
    return (f"| {name} | {p.total / 1e9:.3g} B | {p.trainable / 1e6:.4g} M | {params} | "
            f"{(p.forward + p.backward) / 1e12:.4g} | {m.forward / p.forward:.4f} | "
            f"{m.backward / p.backward:.4f} | {saved} | {time.perf_counter() - start:.0f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two paper designs, two small ones")
    args = parser.parse_args()
    papers = sorted((ROOT / "examples" / "papers").glob("*.yaml"))
    small = list(SMALL_DESIGNS)
    if args.quick:
        papers, small = papers[:2], small[:2]
    print(f"text tokens per sample: {TEXT_TOKENS} (plus the visual tokens)")
    print("| design | params | trainable | params vs model | step TFLOP (pred.) | fwd FLOPs ratio | "
          "bwd FLOPs ratio | saved bytes ratio | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in papers:
        try:
            print(_row(path.stem, load_point(path)[0], on_cpu=False), flush=True)
        except ValueError as exc:  # an expert vlmsearch cannot build (remote code: LEO's InternViT)
            print(f"| {path.stem} | not built: {exc} |", flush=True)
    for name in small:
        point = TrialConfig.model_validate({"name": name, "data": {"image_size": 96},
                                            "train": {"batch_size": 4}, **SMALL_DESIGNS[name]})
        print(_row(f"small: {name}", point, on_cpu=True), flush=True)


if __name__ == "__main__":
    main()
