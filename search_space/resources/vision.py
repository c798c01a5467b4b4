"""Analytic resources of a vision expert: parameters, FLOPs and saved activations, torch-free.

`vision_cost(info, image_size, train, ...)` predicts what the expert's whole HF model costs on one
image, run the way `trials/vlm/experts.py` runs it, before anything is built. Each family's
forward (`vision_families.py`) is written against `Trace`, a symbolic autograd: every op adds
its parameters, its FLOPs (the `ops` units, as FlopCounterMode counts them) and the storages
autograd saves for its backward, by the rules autograd itself follows:

- a linear saves its (autocast) input only when its weights train, a convolution whenever
  anything about it needs a gradient; the weight they save for the input's gradient is a
  parameter (or autocast's per-batch bf16 copy of one): not an activation;
- LoRA (PEFT, `target_modules="all-linear"`) saves the input of A (a fresh bf16 copy under
  autocast, one per adapter) and A's rank-r output;
- a LayerNorm saves its input, mean and rstd; GELU its input; attention (flash/efficient) saves
  q, k, v, the output and the log-sum-exp;
- a view shares its base's storage, and a storage saved twice counts once.

FLOPs count what FlopCounterMode counts (matmuls, convolutions, attention; a grouped
convolution's weight gradient at its real size, see `ops.conv2d`). Backward is the gradient of
the hidden states vlmsearch reads (`output_hidden_states`, up to the last block): the parts
past them (final norms, SigLIP's pooling head, SAM's neck) run forward only (`Trace.tail`),
though their saved tensors still count. Activations are per sample at batch > 1 (some of SAM's
layouts are views at batch 1 and copies above it); per-batch tensors (autocast's bf16 weight
copies, position tables, indices) are not activations of a sample and are left out.

Two kernel behaviours differ between CUDA (what a trial runs on) and CPU (where the tests
measure), gathered in `Policy`: CUDA's autocast runs layer norms and softmax in fp32, and
attention with a trainable bias (SAM) runs the memory-efficient kernel, not the math path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from search_space.presets import ExpertInfo
from search_space.registry import Registry
from search_space.resources import ops
from search_space.resources.ops import PartCost, Work

TRAIN_MODES = ("frozen", "lora", "full")
BYTES = {**ops.DTYPE_BYTES, "int64": 8}


@dataclass(frozen=True)
class Policy:
    """Where the kernels of the device the expert trains on differ from others."""

    fp32_reductions: bool   # autocast runs layer_norm and softmax in fp32 (CUDA; CPU keeps bf16)
    fused_biased_attention: bool  # attention with a trainable bias: memory-efficient kernel (CUDA)
    #                               rather than the math path (CPU: fp32, saves the probabilities)


CUDA = Policy(fp32_reductions=True, fused_biased_attention=True)
CPU = Policy(fp32_reductions=False, fused_biased_attention=False)


@dataclass(frozen=True)
class Act:
    """A symbolic activation of one sample: elements, dtype, grad, and the storage it views."""

    numel: int
    dtype: str
    grad: bool
    storage: int


class Trace:
    """Parameters, FLOPs and saved storages of one sample through the ops a forward calls."""

    def __init__(self, train: str, rank: int, precision: str, recompute: bool, policy: Policy,
                 grad_from: int | None = None) -> None:
        if train not in TRAIN_MODES:
            raise ValueError(f"unknown expert train mode '{train}'; known: {', '.join(TRAIN_MODES)}")
        if precision not in ops.DTYPE_BYTES:
            raise ValueError(f"unknown precision '{precision}'; known: {', '.join(ops.DTYPE_BYTES)}")
        self.full, self.lora, self.rank = train == "full", train == "lora", rank
        self.amp, self.recompute, self.policy = precision == "bf16", recompute, policy
        self.low = "bf16" if self.amp else "fp32"  # what matmuls and convolutions produce
        self.params = self.trainable = self.forward = self.backward = 0
        self._sizes: dict[int, int] = {}
        self._saved: set[int] = set()
        self._in_tail = False
        self.grad_from = grad_from  # blocks after which the hidden state carries a gradient
        self.neck = False  # SAM's neck is read as a layer (its backward counts)

    # storages ----------------------------------------------------------------------------

    def new(self, numel: int, dtype: str, grad: bool) -> Act:
        storage = len(self._sizes)
        self._sizes[storage] = numel * BYTES[dtype]
        return Act(numel, dtype, grad, storage)

    def view(self, x: Act, numel: int) -> Act:
        return Act(numel, x.dtype, x.grad, x.storage)

    def cast(self, x: Act, dtype: str) -> Act:
        return x if x.dtype == dtype else self.new(x.numel, dtype, x.grad)

    def save(self, *xs: Act) -> None:
        self._saved.update(x.storage for x in xs)

    def pixels(self, numel: int) -> Act:
        return self.new(numel, "fp32", False)  # the images never need a gradient

    @property
    def activations(self) -> int:
        return sum(self._sizes[s] for s in self._saved)

    # parameters and work -----------------------------------------------------------------

    def weights(self, n: int) -> None:
        """`n` parameters of the base model (they train only in full mode)."""
        self.params += n
        self.trainable += n * self.full

    def adapter(self, n: int) -> None:
        """`n` LoRA parameters (they always train)."""
        self.params += n
        self.trainable += n

    def work(self, w: Work, weights_train: bool, input_grad: bool) -> None:
        self.forward += w.forward
        if not self._in_tail:
            self.backward += w.backward(weights_train, input_grad)

    @contextmanager
    def tail(self, read: bool = False) -> Iterator[None]:
        """Modules past the hidden states read: forward (and its saved tensors) only; `read`:
        their output is read too (SAM's neck as a layer), so they are part of the backward."""
        self._in_tail = not read
        try:
            yield
        finally:
            self._in_tail = False

    # ops ---------------------------------------------------------------------------------

    def linear(self, x: Act, rows: int, d_in: int, d_out: int, bias: bool = True,
               lora: bool = True, own_weights: bool = True) -> Act:
        """`nn.Linear` on `rows` tokens; `lora`: PEFT wraps it; `own_weights=False`: its weights
        are counted elsewhere (slices of `nn.MultiheadAttention.in_proj_weight`)."""
        if own_weights:
            self.weights(d_in * d_out + d_out * bias)
        self.work(ops.linear(rows, d_in, d_out), self.full, x.grad)
        if self.full:
            self.save(self.cast(x, self.low))
        adapted = self.lora and lora
        if adapted:
            self.adapter(self.rank * (d_in + d_out))
            self.work(ops.lora(rows, d_in, d_out, self.rank), True, x.grad)
            self.save(self.new(x.numel, self.low, x.grad) if self.amp else x)  # A's input
            self.save(self.new(rows * self.rank, self.low, True))  # A's output, saved by B
        return self.new(rows * d_out, self.low, x.grad or self.full or adapted)

    def conv(self, x: Act, out_hw: tuple[int, int], c_in: int, c_out: int, kernel: int,
             groups: int = 1, bias: bool = True) -> Act:
        self.weights(c_out * (c_in // groups) * kernel * kernel + c_out * bias)
        self.work(ops.conv2d(*out_hw, c_in, c_out, kernel, groups), self.full, x.grad)
        if self.full or x.grad:  # unlike mm, convolution saves its input for either gradient
            self.save(self.cast(x, self.low))
        return self.new(c_out * out_hw[0] * out_hw[1], self.low, x.grad or self.full)

    def norm(self, x: Act, width: int) -> Act:
        """`nn.LayerNorm(width)` over the last dimension."""
        self.weights(2 * width)
        fp32 = self.amp and self.policy.fp32_reductions
        grad = x.grad or self.full
        if grad:
            rows = x.numel // width
            self.save(self.cast(x, "fp32") if fp32 else x, self.new(rows, "fp32", True),
                      self.new(rows, "fp32", True))  # input, mean, rstd
        return self.new(x.numel, "fp32" if fp32 else x.dtype, grad)

    def activation(self, x: Act, name: str) -> Act:
        return ACTIVATIONS.get(name)(self, x)

    def attention(self, q: Act, k: Act, v: Act, batch_heads: int, q_len: int, k_len: int,
                  head_dim: int) -> Act:
        """Fused SDPA (flash / memory-efficient; CPU's flash kernel saves the same)."""
        grad = q.grad or k.grad or v.grad
        self.work(ops.attention(batch_heads, q_len, k_len, head_dim, recompute=self.recompute),
                  False, grad)
        out = self.new(batch_heads * q_len * head_dim, self.low, grad)
        if grad:
            self.save(q, k, v, out, self.new(batch_heads * q_len, "fp32", True))  # + logsumexp
        return out

    def scale(self, x: Act, width: int) -> Act:
        """`x * gamma`, a per-channel fp32 parameter (layer scale): the product is fp32."""
        self.weights(width)
        if self.full:
            self.save(x)
        return self.new(x.numel, "fp32", x.grad or self.full)

    def add(self, a: Act, b: Act) -> Act:
        dtype = "fp32" if "fp32" in (a.dtype, b.dtype) else a.dtype
        return self.new(max(a.numel, b.numel), dtype, a.grad or b.grad)

    def result(self) -> PartCost:
        return PartCost(self.params, self.trainable, self.forward, self.backward, self.activations)


def _saves_input(trace: Trace, x: Act) -> Act:
    if x.grad:
        trace.save(x)
    return trace.new(x.numel, x.dtype, x.grad)


def _quick_gelu(trace: Trace, x: Act) -> Act:
    """`x * sigmoid(1.702 x)`: sigmoid saves its output, the product both factors."""
    gate = trace.new(x.numel, x.dtype, x.grad)
    if x.grad:
        trace.save(x, gate)
    return trace.new(x.numel, x.dtype, x.grad)


ACTIVATIONS: Registry[Callable[[Trace, Act], Act]] = Registry("activation")
for _name in ("gelu", "gelu_pytorch_tanh", "silu", "swish"):
    ACTIVATIONS.register(_name, _saves_input, "saves its input")
ACTIVATIONS.register("quick_gelu", _quick_gelu, "x * sigmoid(1.702 x): saves x and the sigmoid")


# configs -----------------------------------------------------------------------------------

# The HF config classes' defaults (transformers 5) for the fields the formulas read: a field
# missing from a config is what the class falls back to. tests check them against the classes.
_VIT_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "num_channels": 3, "image_size": 224}
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "CLIPVisionModel": {**_VIT_DEFAULTS, "intermediate_size": 3072, "patch_size": 32,
                        "hidden_act": "quick_gelu"},
    "SiglipVisionModel": {**_VIT_DEFAULTS, "intermediate_size": 3072, "patch_size": 16,
                          "hidden_act": "gelu_pytorch_tanh", "vision_use_head": True},
    "Dinov2Model": {**_VIT_DEFAULTS, "mlp_ratio": 4, "patch_size": 14, "hidden_act": "gelu",
                    "qkv_bias": True, "use_swiglu_ffn": False, "use_mask_token": True,
                    "num_register_tokens": 0},
    "Dinov2WithRegistersModel": {**_VIT_DEFAULTS, "mlp_ratio": 4, "patch_size": 16,
                                 "hidden_act": "gelu", "qkv_bias": True, "use_swiglu_ffn": False,
                                 "use_mask_token": True, "num_register_tokens": 4},
    "ViTMAEModel": {**_VIT_DEFAULTS, "intermediate_size": 3072, "patch_size": 16,
                    "hidden_act": "gelu", "qkv_bias": True},
    "SamVisionModel": {**_VIT_DEFAULTS, "image_size": 1024, "patch_size": 16, "hidden_act": "gelu",
                       "output_channels": 256, "qkv_bias": True, "mlp_ratio": 4.0,
                       "mlp_dim": None, "use_abs_pos": True, "use_rel_pos": True,
                       "window_size": 14, "global_attn_indexes": [2, 5, 8, 11]},
    "ConvNextModel": {"num_channels": 3, "patch_size": 4, "hidden_sizes": [96, 192, 384, 768],
                      "depths": [3, 3, 9, 3], "hidden_act": "gelu", "layer_scale_init_value": 1e-6,
                      "image_size": 224},
}


def _from_geometry(info: ExpertInfo) -> dict[str, Any]:
    """A config from the geometry alone (an `ExpertInfo` made without one): ViT-style widths."""
    if info.stage_widths:
        return {"hidden_sizes": list(info.stage_widths[1:]), "image_size": info.image_size,
                "patch_size": info.patch_size}
    return {"hidden_size": info.width, "num_hidden_layers": info.num_layers,
            "num_attention_heads": max(1, info.width // 64), "intermediate_size": 4 * info.width,
            "image_size": info.image_size, "patch_size": info.patch_size}


def expert_config(info: ExpertInfo, image_size: int) -> dict[str, Any]:
    """The config the expert runs with: the class defaults, then its own values. A family whose
    input side is fixed (SAM) is built at the side it runs at."""
    own = info.config or _from_geometry(info)
    config = {**CONFIG_DEFAULTS.get(info.hf_class, {}), **own}
    if info.fixed_image_size:
        config["image_size"] = image_size
    return config


FamilyCost = Callable[[Trace, dict[str, Any], int], None]
VISION_FAMILIES: Registry[FamilyCost] = Registry("vision cost family")


def vision_cost(info: ExpertInfo, image_size: int, train: str = "frozen", lora_rank: int = 8,
                precision: str = "fp32", recompute: bool = True, grad_from: int | None = None,
                neck: bool = False) -> PartCost:
    """Parameters, FLOPs and saved bytes of one image through the expert's whole HF model.

    `train`: "frozen" (nothing needs a gradient), "lora" (PEFT all-linear adapters of rank
    `lora_rank` train, the base is frozen) or "full" (every parameter trains); the pixels never
    need a gradient. `precision` "bf16": the forward runs under bf16 autocast (activation bytes
    change, parameters and FLOPs do not). `recompute`: attention backward recomputes the scores
    (the fused GPU kernels; False on the meta device / math kernel). `grad_from`: a trainable
    adapter follows that many blocks (mr_adapter), so the later blocks pass a gradient back.
    `neck`: SAM's neck is a layer read, so the backward runs through it."""
    return trace_vision(info, image_size, train, lora_rank, precision, recompute, CUDA, grad_from,
                        neck)


def trace_vision(info: ExpertInfo, image_size: int, train: str = "frozen", lora_rank: int = 8,
                 precision: str = "fp32", recompute: bool = True, policy: Policy = CUDA,
                 grad_from: int | None = None, neck: bool = False) -> PartCost:
    """`vision_cost` with the kernel `policy` chosen (`CPU` to compare with CPU measurements)."""
    family = VISION_FAMILIES.get(info.family)
    trace = Trace(train, lora_rank, precision, recompute, policy, grad_from)
    trace.neck = neck
    family(trace, expert_config(info, image_size), image_size)
    return trace.result()


# registers the families
from search_space.resources import vision_families as _families  # noqa: E402, F401
