"""Each fusion operator on one 2-expert tiny point: parameters and forward time, side by side.

    python bench/operators.py [--batch 8] [--repeats 30] [--threads 2] [--device cpu|cuda]

The point is examples/comm_point.yaml's experts (tiny-clip layers -1,-2,-3 -> 4x4 x64 via
layerscale; tiny-dinov2 8x8 x48) with each fusion kind in turn. Times are medians after warm-up;
ratios are to channel_concat measured in the same run (machines here are noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from search_space import FUSIONS, TrialConfig, load_point, point_cost
from trials import build_vlm

PARAMS = {"cross_attention": {"heads": 1}, "resampler": {"queries": 16}, "sva": {"queries": 16}}


def median_ms(fn, repeats: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, _ = load_point("examples/comm_point.yaml")
    images = torch.randint(0, 256, (args.batch, 3, 96, 96), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(args.device)
    rows = []
    for kind in FUSIONS.names():
        point = TrialConfig.model_validate({**base.model_dump(), "fusion": {"kind": kind,
                                                                             **PARAMS.get(kind, {})}})
        torch.manual_seed(0)
        vlm = build_vlm(point).to(args.device)
        features = vlm.expert_features(images)  # the cached experts (not a primary run inside)
        plain = {**features, **{n: vlm.experts[n].features(images) for n in vlm.inside}}
        reduced = [vlm.experts[n].merge(list(plain[n])) for n in vlm.expert_names]
        # an operator inside the primary: its own compute (the adapters, no ViT between them)
        fuse = vlm.fusion.connector_only if vlm.fusion.live_primary else vlm.fusion
        live = images if vlm.live else None
        batch = vlm.encode(["what color is the object ?"] * args.batch, ["red"] * args.batch,
                           device=args.device)
        with torch.no_grad():
            fusion_ms = median_ms(lambda: fuse(reduced), args.repeats)  # noqa: B023
            vlm_ms = median_ms(lambda: vlm(**batch, images=live, features=features), args.repeats)  # noqa: B023
        trainable, total = vlm.parameter_counts()
        cost = point_cost(point)
        rows.append((kind, sum(p.numel() for p in vlm.fusion.parameters()), trainable, total,
                     cost.visual_tokens, fusion_ms, vlm_ms))
    ref_fusion, ref_vlm = rows[0][5], rows[0][6]
    print(f"batch {args.batch}, {args.threads} threads, {args.device}, torch {torch.__version__}")
    print(f"{'fusion':<16}{'fusion params':>14}{'trainable':>11}{'total':>9}{'tokens':>8}"
          f"{'fusion ms':>11}{'x cc':>7}{'VLM fwd ms':>12}{'x cc':>7}")
    for kind, fparams, trainable, total, tokens, fms, vms in rows:
        print(f"{kind:<16}{fparams:>14,}{trainable:>11,}{total:>9,}{tokens:>8}"
              f"{fms:>11.2f}{fms / ref_fusion:>7.2f}{vms:>12.2f}{vms / ref_vlm:>7.2f}")


if __name__ == "__main__":
    main()
