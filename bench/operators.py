"""Each fusion operator on one 2-expert tiny point: parameters and forward time, side by side;
then every paper's connector (examples/papers/*.yaml) at its own scale.

    python bench/operators.py [--batch 8] [--repeats 30] [--threads 2] [--device cpu|cuda]
                              [--papers-only] [--paper-repeats 3]

The tiny point is examples/comm_point.yaml's experts (tiny-clip layers -1,-2,-3 -> 4x4 x64 via
layerscale; tiny-dinov2 8x8 x48) with each fusion kind in turn. Times are medians after warm-up;
ratios are to channel_concat measured in the same run (machines here are noisy).

The papers' connectors: the fusion operator with its projector(s) as the paper's point builds
it (the experts' grids and widths it reads, the LM's width), with random weights and random
expert features, one sample: parameters (the module; the cost model's, which a contract test
holds equal), forward FLOPs (FlopCounterMode on the meta device) and the forward's time on
`--device` in fp32 (an operator inside the primary ViT: its adapters and final align, not the
ViT's blocks between them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from search_space import (
    FUSIONS,
    TrialConfig,
    expert_grid,
    expert_info,
    fusion_plan,
    lm_arch,
    load_point,
    point_cost,
)
from trials import Features, build_fusion, build_vlm, count_flops, out_width

# sva at the tiny LM's width (64; Cambrian's 1024 would dwarf the tiny point)
PARAMS = {"cross_attention": {"heads": 1}, "resampler": {"queries": 16},
          "sva": {"queries": 16, "width": 64}}
PAPERS = sorted(Path("examples/papers").glob("*.yaml"))


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


def paper_connector(path: Path) -> tuple[TrialConfig, object, list[Features]]:
    """The paper point's connector (random weights, on the current default device) and one
    sample of random expert features on the grids and widths it reads."""
    point, _ = load_point(str(path))
    plan = fusion_plan(point)
    grids = [expert_grid(cfg) for _, cfg in plan.experts]
    widths = [out_width(cfg) for _, cfg in plan.experts]
    primary = expert_info(plan.experts[0][1].source)
    d = lm_arch(point.language_model.source).hidden
    module = build_fusion(point.fusion, widths, d, point.fusion_projector(), grids=grids,
                          primary_depth=primary.num_layers if primary else None)
    feats = [Features(torch.randn(1, h * w, c), (h, w)) for (h, w), c in zip(grids, widths, strict=True)]
    return point, module, feats


def papers(device: str, repeats: int) -> None:
    print(f"\npapers' connectors: 1 sample, fp32, {device}")
    print(f"{'paper':<18}{'fusion':<16}{'LM d':>6}{'params':>15}{'fwd GFLOP':>11}{'fwd ms':>9}")
    for path in PAPERS:
        with torch.device("meta"):
            point, meta, feats = paper_connector(path)
        run = meta.connector_only if meta.live_primary else meta
        flops = count_flops(lambda: run(feats))  # noqa: B023
        torch.manual_seed(0)
        with torch.device(device):
            _, module, feats = paper_connector(path)
        run = module.connector_only if module.live_primary else module
        with torch.no_grad():
            ms = median_ms(lambda: run(feats), repeats)  # noqa: B023
        d = lm_arch(point.language_model.source).hidden
        params = sum(p.numel() for p in module.parameters())
        print(f"{path.stem:<18}{point.fusion.kind:<16}{d:>6}{params:>15,}{flops / 1e9:>11.2f}{ms:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast on cuda)")
    parser.add_argument("--papers-only", action="store_true", help="only the papers' connectors")
    parser.add_argument("--paper-repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.papers_only:
        tiny(args)
    papers(args.device, args.paper_repeats)


def tiny(args: argparse.Namespace) -> None:
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
