"""Training throughput of a realistic proxy VLM: samples/s, peak memory and MFU, feature cache on/off.

    python bench/gpu_throughput.py                       # one GPU: base-size experts, ~0.5B LM, bf16
    python bench/gpu_throughput.py --scale tiny --device cpu --steps 4   # a smoke run on a laptop
    python bench/gpu_throughput.py --scale paper --steps 20   # 7B: the resource model vs the GPU

`--scale paper` trains examples/papers/mousi.yaml (CLIP-L/336 + DINOv2-L@448 + SAM-B@1024, 5696
visual tokens on 120 positions, a Vicuna-7B-shaped LM with LoRA r 64, batch 16) built from the
checkpoints' configs with random weights on the GPU, on probe images at 1024 px, with the
recipe `vlmsearch trial` would choose (bf16, micro-batch and checkpointing from the resource
model), and prints the resource model's `est_mem_gb` against `torch.cuda.max_memory_allocated`,
samples/s, and MFU (the model's step FLOPs over the measured step time and the device's peak).

`--scale base` writes random-weight checkpoints from real configs (CLIP ViT-B/16 at 224, DINOv2-B/14
at 224, SAM ViT-B at 1024, and a 28-layer 1024-wide Llama, ~0.47B parameters, with vlmsearch's word
tokenizer) with `save_pretrained`, and loads them back by path as any checkpoint directory. The
design is a three-expert sequence_concat point (196 + 256 + 256 visual tokens) with an MLP projector
and a fully trained LM. It trains twice, with the feature cache off (experts run every step) and on
(features computed once, then read), and prints samples/s, peak memory and model FLOPs utilisation
(MFU: 6*N*T FLOPs per sample for what trains, 2*N*T for the frozen experts' forward when they run;
attention FLOPs ignored, so MFU is a lower bound), then the top operators of a profiled run.
On CUDA, training runs under bf16 autocast (as `vlmsearch trial` does).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
    SamVisionConfig,
    SamVisionModel,
)

from search_space import dump_yaml, load_point
from trials import FeatureCache, TrialOptions, run_trial, word_tokenizer

transformers.utils.logging.disable_progress_bar()  # one "Loading weights" bar per model otherwise

# (hidden, layers, heads, mlp) per scale; image sizes are the real ones at base scale.
SCALES = {
    "base": {"vit": (768, 12, 12, 3072), "lm": (1024, 28, 16, 4096), "clip_image": 224, "dino_image": 224,
             "sam_image": 1024, "tokens": {"clip": None, "dinov2": None, "sam": 256}, "image": 224},
    "tiny": {"vit": (32, 2, 2, 64), "lm": (64, 2, 4, 128), "clip_image": 64, "dino_image": 56,
             "sam_image": 128, "tokens": {"clip": None, "dinov2": None, "sam": 16}, "image": 64},
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, SXM


def write_checkpoints(folder: Path, scale: dict) -> dict[str, Path]:
    hidden, layers, heads, mlp = scale["vit"]
    vit = {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
           "intermediate_size": mlp}
    models = {
        "clip": CLIPVisionModel(CLIPVisionConfig(**vit, image_size=scale["clip_image"], patch_size=16)),
        "dinov2": Dinov2Model(Dinov2Config(**{k: v for k, v in vit.items() if k != "intermediate_size"},
                                           mlp_ratio=mlp // hidden, image_size=scale["dino_image"],
                                           patch_size=14)),
        "sam": SamVisionModel(SamVisionConfig(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_dim=mlp,
            image_size=scale["sam_image"], patch_size=16, output_channels=256 if hidden >= 256 else hidden,
            window_size=14 if scale["sam_image"] >= 1024 else 4,
            global_attn_indexes=[i for i in (2, 5, 8, 11) if i < layers] or [layers - 1])),
    }
    paths = {}
    for name, model in models.items():
        paths[name] = folder / name
        model.save_pretrained(paths[name])
    tokenizer = word_tokenizer()
    width, depth, lm_heads, lm_mlp = scale["lm"]
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=depth,
                                      num_attention_heads=lm_heads, intermediate_size=lm_mlp,
                                      pad_token_id=tokenizer.pad_token_id,
                                      bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True))
    paths["lm"] = folder / "lm"
    lm.save_pretrained(paths["lm"])
    tokenizer.save_pretrained(paths["lm"])
    return paths


def write_point(folder: Path, paths: dict[str, Path], scale: dict, steps: int, batch: int,
                train: str) -> Path:
    tokens = scale["tokens"]
    point = {
        "name": "gpu-throughput",
        "data": {"benchmark": "probe", "train_size": max(256, steps * batch), "eval_size": 64,
                 "image_size": scale["image"], "seed": 0},
        "language_model": {"source": str(paths["lm"]), "train": train},
        "experts": {"clip": {"source": str(paths["clip"]), "layers": -2, "tokens": tokens["clip"]},
                    "dinov2": {"source": str(paths["dinov2"]), "layers": -1, "tokens": tokens["dinov2"]},
                    "sam": {"source": str(paths["sam"]), "image_size": scale["sam_image"],
                            "tokens": tokens["sam"]}},
        "fusion": {"kind": "sequence_concat"}, "projector": "mlp2x_gelu", "positions": "original",
        "train": {"steps": steps, "batch_size": batch, "lr": 1.0e-4, "seed": 0},
    }
    path = folder / "point.yaml"
    path.write_text(dump_yaml(point), encoding="utf-8")
    return path


def params(path: Path) -> int:
    from transformers import AutoModel

    return sum(p.numel() for p in AutoModel.from_pretrained(path).parameters())


def train_flops_per_sample(metrics: dict) -> float:
    """6*N*T for what trains (projector, fusion, LM) over the LM sequence: the training loop's work
    per sample (a frozen LM's backward through activations is not counted: a lower bound)."""
    sequence = metrics["positions_used"] + 16  # visual positions + the question and answer text
    return 6.0 * metrics["trainable_params"] * sequence


def expert_flops_per_image(expert_params: dict[str, int], patches: dict[str, int]) -> float:
    """The frozen experts' forward, 2*N*T each over their patches (once per image and trial when
    the features are not cached)."""
    return sum(2.0 * expert_params[n] * patches[n] for n in expert_params)


def peak_tflops(device: str, given: float | None) -> float | None:
    if given or not device.startswith("cuda"):
        return given
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def profile(point_path: Path, device: str, cache: FeatureCache | None, steps: int) -> str:
    point, _ = load_point(point_path)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        run_trial(point, TrialOptions(steps=steps, device=device, cache=cache))
    key = "self_cuda_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=15)


def _pct(tflops: float, peak: float | None) -> str:
    return f"{100 * tflops / peak:.1f}" if peak else "-"


PROFILE_OF_DEVICE = {"H200": "h200", "H100": "h100", "A100-SXM4-40GB": "a100-40g", "A100": "a100-80g",
                     "L40S": "l40s"}


def device_profile(device: str) -> str:
    """The resource model's profile of this machine's GPU (cpu without one)."""
    if not device.startswith("cuda"):
        return "cpu"
    name = torch.cuda.get_device_name()
    return next((v for k, v in PROFILE_OF_DEVICE.items() if k in name), "h100")


def paper_scale(args: argparse.Namespace) -> None:
    """The 7B mousi design with random weights: the resource model against the real step."""
    from search_space import DEVICE_PROFILES, GB, Resources, point_estimate

    point, _ = load_point(Path(__file__).resolve().parents[1] / "examples/papers/mousi.yaml")
    data = {"benchmark": "probe", "train_size": max(64, args.steps * args.batch), "eval_size": 16,
            "image_size": 1024, "seed": 0}
    train = point.train.model_copy(update={"steps": args.steps, "batch_size": args.batch})
    point = point.model_copy(update={"data": point.data.model_validate(data), "train": train})
    profile = device_profile(args.device)
    resources = Resources(gpu=1, device_profile=profile, text_tokens=16)  # the probe's questions
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp) / "cache")
        result = run_trial(point, TrialOptions(device=args.device, cache=cache, resources=resources,
                                               random_weights=True))
    assert result.status == "complete", result.failure
    m, e = result.metrics, point_estimate(point, resources)
    assert e is not None
    step_flops = sum(plan.step_flops(args.batch) * plan.stage.steps for plan in e.stages) / args.steps
    peak = DEVICE_PROFILES.get(profile).peak_tflops(e.precision) * 1e12
    seconds = m["train_time_s"] / args.steps
    print(f"mousi at 7B on {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'} "
          f"(profile {profile}): {m['visual_tokens']:.0f} visual tokens, {e.seq_len} tokens a sample, "
          f"batch {args.batch}, {args.steps} steps, {e.precision}, micro-batch {m['micro_batch']:.0f}, "
          f"checkpointing {'on' if e.checkpointing else 'off'}")
    print(f"est_mem_gb {m['est_mem_gb']:.1f} GB; max_memory_allocated {m['peak_mem_mb'] * 2**20 / GB:.1f} GB "
          f"(ratio measured/estimated {m['peak_mem_mb'] * 2**20 / GB / m['est_mem_gb']:.2f})")
    print(f"{args.batch / seconds:.2f} samples/s; {seconds:.2f} s a step; model step "
          f"{step_flops / 1e12:.0f} TFLOP; MFU {100 * step_flops / seconds / peak:.1f}% of "
          f"{peak / 1e12:.0f} TFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=[*sorted(SCALES), "paper"], default="base")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", default="full", help="the LM's train mode: full, lora or frozen")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    if args.scale == "paper":
        paper_scale(args)
        return
    scale = SCALES[args.scale]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_checkpoints(folder, scale)
        point_path = write_point(folder, paths, scale, args.steps, args.batch, args.train)
        point, _ = load_point(point_path)
        expert_params = {n: params(paths[n]) for n in ("clip", "dinov2", "sam")}
        patches = {"clip": (scale["clip_image"] // 16) ** 2 + 1,
                   "dinov2": (scale["dino_image"] // 14) ** 2 + 1,
                   "sam": (scale["sam_image"] // 16) ** 2}
        peak = peak_tflops(args.device, args.peak_tflops)
        cache = FeatureCache(folder / "cache")
        run_trial(point, TrialOptions(steps=2, device=args.device, cache=cache))  # fill the cache, warm up
        images = point.data.train_size + point.data.eval_size
        rows = []
        for label, used in (("cache off", FeatureCache(None)), ("cache on", cache)):
            start = time.perf_counter()
            result = run_trial(point, TrialOptions(device=args.device, cache=used))
            wall = time.perf_counter() - start
            assert result.status == "complete", result.failure
            m = result.metrics
            samples = args.steps * args.batch
            loop_flops = train_flops_per_sample(m) * samples / m["train_time_s"]
            expert = 0.0 if label == "cache on" else expert_flops_per_image(expert_params, patches) * images
            whole_flops = (train_flops_per_sample(m) * samples + expert) / wall
            rows.append((label, samples / m["train_time_s"], samples / wall, wall - m["train_time_s"],
                         m["peak_mem_mb"] / 1024, loop_flops / 1e12, whole_flops / 1e12))
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        print(f"{args.scale} proxy on {device}: experts "
              f"{', '.join(f'{n} {v / 1e6:.0f}M' for n, v in expert_params.items())}; total "
              f"{m['total_params'] / 1e6:.0f}M, trainable {m['trainable_params'] / 1e6:.1f}M "
              f"(LM {args.train}); "
              f"{m['visual_tokens']} visual tokens; batch {args.batch}, {args.steps} steps, {images} images")
        print(f"{'':10s} {'loop samp/s':>11s} {'trial samp/s':>12s} {'other s':>8s} {'peak GB':>8s} "
              f"{'loop TF/s':>9s} {'MFU %':>6s} {'trial TF/s':>10s} {'MFU %':>6s}")
        for label, loop_rate, trial_rate, other, peak_gb, loop_tf, trial_tf in rows:
            print(f"{label:10s} {loop_rate:11.1f} {trial_rate:12.2f} {other:8.1f} {peak_gb:8.2f} "
                  f"{loop_tf:9.2f} "
                  f"{_pct(loop_tf, peak):>6s} {trial_tf:10.2f} {_pct(trial_tf, peak):>6s}")
        print(f"cache on / off, whole trial: {rows[1][2] / rows[0][2]:.2f}x samples/s "
              "(the training loop is the same; 'other' is building, feature extraction or loading, "
              "evaluation)")
        if not args.no_profile:
            print("\nprofile, cache off, 10 steps (top operators by self time):")
            print(profile(point_path, args.device, FeatureCache(None), min(10, args.steps)))


if __name__ == "__main__":
    main()
