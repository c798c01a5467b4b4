"""The vision resource model (`search_space.resources.vision`) against the real HF classes.

- parameters (total, and trainable under LoRA / full) exact, for every preset, scaled-down
  variant and known checkpoint (paper scale, built on the meta device);
- forward and backward FLOPs as FlopCounterMode counts them on the meta device, run the way
  `trials/vlm/experts.py` runs the model, at the native input side and another one;
- activation bytes against what autograd really saves on CPU (scaled-down models, fp32 and bf16
  autocast): exact under the CPU kernel policy, within 20% under the CUDA one it predicts.

The backward is that of a loss on the hidden states (what vlmsearch reads).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch import Tensor, nn

from search_space.presets import KNOWN_CHECKPOINTS, PRESETS, ExpertInfo, info_from_config
from search_space.resources.ops import PartCost
from search_space.resources.vision import (
    CONFIG_DEFAULTS,
    CPU,
    VISION_FAMILIES,
    expert_config,
    trace_vision,
    vision_cost,
)
from trials.measure import forward_backward_flops, per_sample_saved_bytes
from trials.vlm.experts import ADAPTERS

RANK = 8

# Scaled-down variants the presets do not cover: SAM windows that need padding, DINOv2 with
# register tokens (its own class) and with the SwiGLU feed-forward (as the giant model has).
VARIANTS: dict[str, ExpertInfo] = {
    "sam-padded": ExpertInfo("sam", "SamVisionModel", 128, 16, 3, 48, fixed_image_size=True, config={
        "hidden_size": 48, "output_channels": 40, "num_hidden_layers": 3, "num_attention_heads": 2,
        "image_size": 128, "patch_size": 16, "mlp_dim": 80, "window_size": 3,
        "global_attn_indexes": [1]}),
    "dinov2-registers": ExpertInfo("dinov2", "Dinov2WithRegistersModel", 112, 14, 2, 48, config={
        "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 2,
        "image_size": 112, "patch_size": 14, "num_register_tokens": 4}),
    "dinov2-swiglu": ExpertInfo("dinov2", "Dinov2Model", 112, 14, 2, 48, config={
        "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "mlp_ratio": 4,
        "image_size": 112, "patch_size": 14, "use_swiglu_ffn": True}),
}
SMALL: dict[str, ExpertInfo] = {**dict(PRESETS.items()), **VARIANTS}

# Known checkpoints: the native side, then another (SAM is built at the side it runs at).
SIZES: dict[str, tuple[int, int]] = {
    "openai/clip-vit-large-patch14-336": (336, 224),
    "openai/clip-vit-large-patch14": (224, 336),
    "openai/clip-vit-base-patch16": (224, 336),
    "google/siglip-so400m-patch14-384": (384, 224),
    "facebook/dinov2-large": (518, 448),
    "facebook/dinov2-base": (518, 224),
    "facebook/sam-vit-base": (1024, 512),
    "facebook/sam-vit-large": (1024, 768),
    "facebook/convnext-large-224": (224, 320),
    "facebook/vit-mae-large": (224, 448),
}


def _build(info: ExpertInfo, size: int, train: str, device: str = "cpu") -> nn.Module:
    """The HF class from the expert's config, as vlmsearch builds it, in a train mode."""
    cls = getattr(transformers, info.hf_class)
    kwargs = {**info.config, **ADAPTERS.get(info.family).overrides}
    if info.fixed_image_size:
        kwargs["image_size"] = size
    torch.manual_seed(0)
    with torch.device(device):
        model = cls._from_config(cls.config_class(**kwargs))
    model.eval().requires_grad_(train == "full")
    if train == "lora":
        lora = LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.0, target_modules="all-linear")
        model = get_peft_model(model, lora)
    return model


def _runner(info: ExpertInfo, model: nn.Module, precision: str = "fp32") -> Any:
    """`run(pixels)`: the hidden states, run by the family adapter (under bf16 autocast)."""
    adapter = ADAPTERS.get(info.family)()

    def run(pixels: Tensor) -> list[Tensor]:
        device = "cpu" if pixels.device.type == "meta" else pixels.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return adapter.run(model, pixels)

    return run


def _hidden_loss(states: list[Tensor]) -> Tensor:
    return sum(s.float().sum() for s in states)


def _count(model: nn.Module) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def _measured_flops(info: ExpertInfo, size: int, train: str) -> tuple[nn.Module, int, int]:
    model = _build(info, size, train, "meta")
    pixels = torch.empty(1, 3, size, size, device="meta")
    fwd, bwd = forward_backward_flops(lambda: _runner(info, model)(pixels), _hidden_loss)
    return model, fwd, bwd


def _check_flops(info: ExpertInfo, size: int, train: str) -> None:
    model, fwd, bwd = _measured_flops(info, size, train)
    cost = trace_vision(info, size, train, RANK, recompute=False)  # meta: SDPA's math path
    assert (cost.params, cost.trainable) == _count(model)
    assert cost.forward == pytest.approx(fwd, rel=0.02)
    assert cost.backward == pytest.approx(bwd, rel=0.02)
    if train == "full":  # the same model frozen: forward only, nothing saved
        frozen = vision_cost(info, size, "frozen", RANK)
        assert frozen == PartCost(cost.params, 0, cost.forward, 0, 0)


@pytest.mark.parametrize("train", ["lora", "full"])
@pytest.mark.parametrize("name", list(SMALL))
def test_small_params_and_flops(name: str, train: str) -> None:
    info = SMALL[name]
    _check_flops(info, info.image_size, train)


# The presets at a side other than their own: interpolated positions, SAM built at 160 (its
# 10x10 grid padded to whole 4x4 windows), ConvNeXt's maps one step larger.
OTHER_SIZE = {"tiny-clip": 128, "tiny-siglip": 112, "tiny-dinov2": 140, "tiny-mae": 128,
              "tiny-sam": 160, "tiny-convnext": 128}


@pytest.mark.parametrize("train", ["lora", "full"])
@pytest.mark.parametrize("name", list(OTHER_SIZE))
def test_small_flops_at_another_size(name: str, train: str) -> None:
    _check_flops(PRESETS.get(name), OTHER_SIZE[name], train)


@pytest.mark.parametrize("train", ["lora", "full"])
@pytest.mark.parametrize("size_index", [0, 1], ids=["native", "other"])
@pytest.mark.parametrize("name", list(SIZES))
def test_checkpoint_params_and_flops(name: str, size_index: int, train: str) -> None:
    """Paper scale, on the meta device; LoRA through a real `get_peft_model` there too."""
    _check_flops(KNOWN_CHECKPOINTS[name], SIZES[name][size_index], train)


def test_every_known_checkpoint_is_measured() -> None:
    # InternViT (remote code) against its reference forward: test_resources_internvit.py
    assert set(SIZES) == {n for n, info in KNOWN_CHECKPOINTS.items() if info.family != "internvit"}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("train", ["lora", "full"])
@pytest.mark.parametrize("name", list(SMALL))
def test_activation_bytes(name: str, train: str, precision: str) -> None:
    """Bytes saved for backward per sample, on real CPU tensors: the CPU policy derives them
    exactly; the CUDA policy `vision_cost` uses differs only where CUDA's kernels do."""
    info = SMALL[name]
    size = info.image_size
    model = _build(info, size, train)
    run = _runner(info, model, precision)
    measured = per_sample_saved_bytes(lambda b: run(torch.randn(b, 3, size, size)), model.parameters())
    on_cpu = trace_vision(info, size, train, RANK, precision, policy=CPU).activations
    assert on_cpu == pytest.approx(measured, rel=0.02)
    predicted = vision_cost(info, size, train, RANK, precision).activations
    if info.family == "sam" and precision == "bf16":
        # CPU's math path keeps fp32 probabilities (N^2 per head); CUDA's memory-efficient
        # kernel keeps the bf16 bias instead: about half, as much as the global layers weigh
        assert 0.5 * measured < predicted < measured
    else:
        assert predicted == pytest.approx(measured, rel=0.2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("train", ["lora", "full"])
def test_activation_bytes_at_another_size(train: str, precision: str) -> None:
    """Interpolated position embeddings (CLIP at 128 instead of 96)."""
    info = PRESETS.get("tiny-clip")
    model = _build(info, 128, train)
    run = _runner(info, model, precision)
    measured = per_sample_saved_bytes(lambda b: run(torch.randn(b, 3, 128, 128)), model.parameters())
    assert vision_cost(info, 128, train, RANK, precision).activations == pytest.approx(measured, rel=0.02)


def test_frozen_costs_nothing_to_train() -> None:
    for info in [*SMALL.values(), *KNOWN_CHECKPOINTS.values()]:
        cost = vision_cost(info, info.image_size, "frozen", precision="bf16")
        assert (cost.trainable, cost.backward, cost.activations) == (0, 0, 0)
        assert cost.params > 0 and cost.forward > 0


def test_precision_changes_only_bytes() -> None:
    info = KNOWN_CHECKPOINTS["openai/clip-vit-large-patch14-336"]
    fp32, bf16 = (vision_cost(info, 336, "full", precision=p) for p in ("fp32", "bf16"))
    assert (fp32.params, fp32.trainable, fp32.forward, fp32.backward) == (
        bf16.params, bf16.trainable, bf16.forward, bf16.backward)
    assert bf16.activations < fp32.activations


def test_recompute_adds_one_score_product_per_attention() -> None:
    info = KNOWN_CHECKPOINTS["openai/clip-vit-base-patch16"]
    fused, meta = vision_cost(info, 224, "full"), vision_cost(info, 224, "full", recompute=False)
    n, heads, layers = 14 * 14 + 1, 12, 12
    assert fused.backward - meta.backward == layers * 2 * heads * n * n * 64
    assert fused.forward == meta.forward


def test_lora_rank_scales_the_adapters() -> None:
    info = KNOWN_CHECKPOINTS["facebook/dinov2-base"]
    r8, r16 = (vision_cost(info, 224, "lora", rank) for rank in (8, 16))
    assert r16.trainable == 2 * r8.trainable
    assert r16.params - r8.params == r8.trainable


# Defaults that stand for what a class does without a config field: Dinov2Model has no
# registers, the registers class always has a mask token.
STAND_INS = {("Dinov2Model", "num_register_tokens"), ("Dinov2WithRegistersModel", "use_mask_token")}


def test_config_defaults_are_the_hf_classes() -> None:
    """A field missing from a config means the class default: the table must match them."""
    for hf_class, defaults in CONFIG_DEFAULTS.items():
        config = getattr(transformers, hf_class).config_class()
        for key, value in defaults.items():
            if (hf_class, key) in STAND_INS:
                assert not hasattr(config, key), f"{hf_class}.{key} is a config field now"
            elif key == "mlp_dim":  # None: the class derives it from mlp_ratio, as the model does
                assert config.mlp_dim == int(config.hidden_size * config.mlp_ratio)
            else:
                actual = getattr(config, key)
                assert (list(actual) if isinstance(actual, tuple) else actual) == value, key


def test_known_checkpoint_geometry_matches_its_config() -> None:
    for name, info in KNOWN_CHECKPOINTS.items():
        config = expert_config(info, info.image_size)
        if info.family == "convnext":
            assert (info.num_layers, info.width) == (len(config["depths"]), config["hidden_sizes"][-1])
            assert info.stage_widths[1:] == tuple(config["hidden_sizes"]), name
            continue
        assert (info.num_layers, info.width, info.patch_size) == (
            config["num_hidden_layers"], config["hidden_size"], config["patch_size"]), name


def test_local_checkpoint_config_is_kept() -> None:
    """A checkpoint directory's config.json (here written by the HF config classes) gives the
    same costs as the known checkpoint it describes."""
    for name, config in [
        ("openai/clip-vit-base-patch16",
         transformers.CLIPConfig(vision_config=KNOWN_CHECKPOINTS["openai/clip-vit-base-patch16"].config)),
        ("facebook/convnext-large-224",
         transformers.ConvNextConfig(**KNOWN_CHECKPOINTS["facebook/convnext-large-224"].config)),
        ("facebook/sam-vit-base",
         transformers.SamConfig(vision_config=KNOWN_CHECKPOINTS["facebook/sam-vit-base"].config)),
    ]:
        known = KNOWN_CHECKPOINTS[name]
        local = info_from_config(config.to_dict())
        assert local.config
        assert vision_cost(local, known.image_size, "lora") == vision_cost(known, known.image_size, "lora")


def test_families_without_a_formula_say_so() -> None:
    generic = ExpertInfo("generic", "AutoModel", 224, 16, 12, 768)
    with pytest.raises(KeyError, match="generic"):
        vision_cost(generic, 224)
    assert set(VISION_FAMILIES.names()) == {"clip", "siglip", "dinov2", "sam", "convnext", "mae",
                                            "internvit"}


def test_bad_modes_are_refused() -> None:
    info = PRESETS.get("tiny-clip")
    with pytest.raises(ValueError, match="train mode"):
        vision_cost(info, 96, "partial")
    with pytest.raises(ValueError, match="precision"):
        vision_cost(info, 96, precision="fp16")


def test_vision_model_is_torch_free() -> None:
    code = ("import sys; import search_space.resources.vision as v; "
            "from search_space.presets import KNOWN_CHECKPOINTS as K; "
            "v.vision_cost(K['facebook/sam-vit-base'], 1024, 'lora', precision='bf16'); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("grad_from", [1, 3])
@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip", "tiny-dinov2"])
def test_a_frozen_vit_with_an_adapter_inside(name: str, grad_from: int) -> None:
    """mr_adapter: a frozen ViT whose hidden state `grad_from` passes through a trainable
    adapter (here `x + b`, which saves nothing itself) back-propagates from there on: input
    gradients only, the activations of the later blocks kept."""
    info, size = PRESETS.get(name), PRESETS.get(name).image_size
    adapter = ADAPTERS.get(info.family)()
    biases = {d: nn.Parameter(torch.zeros(info.width, device=d)) for d in ("cpu", "meta")}

    def run(model: nn.Module, pixels: Tensor) -> list[Tensor]:
        inject = {grad_from: lambda x, grid: x + biases[x.device.type]}
        with adapter.inject(model, inject, size):
            return adapter.run(model, pixels)

    cost = trace_vision(info, size, "frozen", RANK, recompute=False, policy=CPU, grad_from=grad_from)
    model = _build(info, size, "frozen", "meta")
    fwd, bwd = forward_backward_flops(lambda: run(model, torch.empty(1, 3, size, size, device="meta")),
                                      _hidden_loss)
    assert cost.trainable == 0 and cost.forward == pytest.approx(fwd, rel=0.02)
    assert cost.backward == pytest.approx(bwd, rel=0.02) and bwd > 0
    model = _build(info, size, "frozen")
    measured = per_sample_saved_bytes(lambda b: run(model, torch.randn(b, 3, size, size)),
                                      [*model.parameters(), biases["cpu"]])
    assert cost.activations == pytest.approx(measured, rel=0.02) and measured > 0
    assert cost.activations < trace_vision(info, size, "frozen", RANK, policy=CPU,
                                           grad_from=grad_from - 1).activations
