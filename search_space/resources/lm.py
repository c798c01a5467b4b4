"""Analytic resource model of the language model of a VLM trial (torch-free).

`lm_arch(source)` sizes the LM that `trials.vlm.lm.load_lm` builds (a preset, a known HF id or a
local checkpoint directory); `lm_cost(arch, seq_len, ...)` gives its parameters, the FLOPs of
one sequence's training step and the bytes autograd saves for its backward, as `PartCost`.

What is modelled is the call `VLM.forward` makes: one sequence of `seq_len` tokens (batch 1, no
padding) given as `inputs_embeds` that require grad, with position ids and `labels` (HF's loss
over the logits of every position). So the backward always carries the gradient through every
decoder layer down to the input embeddings, even when no LM weight trains.

FLOPs follow `ops` (what `FlopCounterMode` counts): the seven projections of each decoder
layer, sdpa over the full score matrix, and the LM head over all positions. Gradient
checkpointing (non-reentrant, as `gradient_checkpointing_enable` sets it up) recomputes each
layer's forward up to its last matmul: torch stops the recompute once the last tensor the layer
saved has been re-saved, and a matmul saves its inputs before it runs.

Activation bytes are what autograd saves, read off the HF Llama / Qwen2 / Mistral code (sdpa's
fused kernels: q, k, v, output and logsumexp; no mask and no repeated K/V heads for one unpadded
sequence) -- see `_layer_bytes`. Under `precision="bf16"` (autocast) the residual stream, the
RMSNorms and the rotary tables stay fp32 (the VLM's input embeddings are fp32), matmuls run in
bf16 and each matmul casts its fp32 input to a bf16 copy of its own. Weights are not
activations: bf16 copies of weights made by autocast are per step, not per sample, and are not
counted (frozen weights may be stored in bf16, which needs none).

Not modelled: padded batches (HF then builds a 4D mask, which sdpa saves, and repeats K/V to
every head), fp32 attention on a GPU where no fused kernel takes it (the math kernel saves the
L x L probabilities), and transient tensors such as the gradient of the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space.presets import LM_PRESETS
from search_space.registry import Registry
from search_space.resources import ops
from search_space.resources.known_lms import KNOWN_LMS, KnownLM, read_checkpoint, word_vocab
from search_space.resources.ops import PartCost, Work

F32 = 4           # bytes of the fp32 residual stream, norms, rotary tables, logsumexp, loss
LABEL_BYTES = 8   # int64 shifted labels, saved by the loss


@dataclass(frozen=True)
class LMArch:
    """The shapes that fix an LM's cost, as vlmsearch builds it."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab_rows: int        # embedding (and untied lm_head) rows after load_lm adds <image>
    tied: bool             # lm_head shares the embedding matrix
    max_positions: int
    family: str            # a key of FAMILIES
    qkv_bias: bool = False  # q/k/v projections have biases (Qwen2)
    o_bias: bool = False
    mlp_bias: bool = False

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> tuple[tuple[str, int, int], ...]:
        """(name, in, out) of one decoder layer's projections, in the order they run."""
        d, i = self.hidden, self.intermediate
        return (("q", d, self.q_width), ("k", d, self.kv_width), ("v", d, self.kv_width),
                ("o", self.q_width, d), ("gate", d, i), ("up", d, i), ("down", i, d))


# ---- families and sources -----------------------------------------------------------------

Biases = Callable[[Mapping[str, Any]], tuple[bool, bool, bool]]  # config -> (q/k/v, o, mlp)


@dataclass(frozen=True)
class Family:
    """One HF causal-LM class: its config defaults (config.json omits defaults) and biases."""

    hf_class: str
    defaults: Mapping[str, Any]
    biases: Biases


def _llama_biases(c: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    return bool(c["attention_bias"]), bool(c["attention_bias"]), bool(c["mlp_bias"])


_SIZES = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
          "head_dim": None, "tie_word_embeddings": False}
FAMILIES: Registry[Family] = Registry("LM family")
FAMILIES.register("llama", Family("LlamaForCausalLM", {
    **_SIZES, "vocab_size": 32000, "intermediate_size": 11008, "num_key_value_heads": None,
    "max_position_embeddings": 2048, "attention_bias": False, "mlp_bias": False}, _llama_biases),
    "Llama / Vicuna / Llama-3: optional attention and MLP biases")
FAMILIES.register("qwen2", Family("Qwen2ForCausalLM", {
    **_SIZES, "vocab_size": 151936, "intermediate_size": 22016, "num_key_value_heads": 32,
    "max_position_embeddings": 32768}, lambda c: (True, False, False)),
    "Qwen2 / Qwen2.5: q, k, v projections with biases")
FAMILIES.register("mistral", Family("MistralForCausalLM", {
    **_SIZES, "vocab_size": 32000, "intermediate_size": 14336, "num_key_value_heads": 8,
    "max_position_embeddings": 131072}, lambda c: (False, False, False)),
    "Mistral: no biases")


def arch_from_config(config: Mapping[str, Any], tokenizer_len: int, image_token: bool) -> LMArch:
    """The LM load_lm builds from this config and a tokenizer of `tokenizer_len` tokens: it adds
    `<image>` when missing and grows (never shrinks) the embeddings to the tokenizer."""
    family = str(config["model_type"])
    c = {**FAMILIES.get(family).defaults, **config}
    heads, hidden = int(c["num_attention_heads"]), int(c["hidden_size"])
    qkv, o, mlp = FAMILIES.get(family).biases(c)
    tokens = tokenizer_len + (0 if image_token else 1)
    return LMArch(hidden=hidden, layers=int(c["num_hidden_layers"]), heads=heads,
                  kv_heads=int(c["num_key_value_heads"] or heads),
                  head_dim=int(c["head_dim"] or hidden // heads),
                  intermediate=int(c["intermediate_size"]),
                  vocab_rows=max(int(c["vocab_size"]), tokens), tied=bool(c["tie_word_embeddings"]),
                  max_positions=int(c["max_position_embeddings"]), family=family,
                  qkv_bias=qkv, o_bias=o, mlp_bias=mlp)


def _preset(name: str) -> KnownLM:
    """A preset: a tied LlamaForCausalLM over the word tokenizer (trials.vlm.lm._tiny_llama)."""
    vocab = len(word_vocab())
    config = {**LM_PRESETS.get(name), "model_type": "llama", "vocab_size": vocab,
              "tie_word_embeddings": True}
    return KnownLM(config, vocab, image_token=True)


def known_lm(source: str) -> KnownLM | None:
    if source in LM_PRESETS:
        return _preset(source)
    if source in KNOWN_LMS:
        return KNOWN_LMS.get(source)
    return read_checkpoint(source) if Path(source).is_dir() else None


def lm_arch(source: str) -> LMArch | None:
    """The LM of `source` (a preset, a known HF id, or a local directory with config.json),
    or None when it cannot be known without downloading (or its family is not modelled)."""
    known = known_lm(source)
    if known is None or known.config.get("model_type") not in FAMILIES:
        return None
    return arch_from_config(known.config, known.tokenizer_len, known.image_token)


# ---- train modes and precisions -----------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """What trains: the LM's own weights, or PEFT LoRA adapters on every decoder linear."""

    base_trains: bool
    adapters: bool
    adapters_train: bool = True  # False: a stage that holds a LoRA LM (its adapters still run)

    @property
    def tuning(self) -> bool:
        """The adapters are there and train."""
        return self.adapters and self.adapters_train


TRAIN_MODES: Registry[Mode] = Registry("LM train mode")
TRAIN_MODES.register("frozen", Mode(False, False), "no LM weight trains; gradients pass through")
TRAIN_MODES.register("lora", Mode(False, True), "LoRA on all linears but lm_head (PEFT all-linear)")
TRAIN_MODES.register("full", Mode(True, False), "every LM parameter trains")
TRAIN_MODES.register("lora-held", Mode(False, True, False),
                     "a LoRA LM in a stage that does not train it: adapters run, nothing trains")


@dataclass(frozen=True)
class Precision:
    matmul_bytes: int  # bytes of a matmul's inputs and outputs
    autocast: bool     # matmuls cast their inputs to bf16, a copy per call


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.register("fp32", Precision(4, False), "everything in fp32")
PRECISIONS.register("bf16", Precision(2, True), "torch.autocast(dtype=torch.bfloat16)")


# ---- parameters ---------------------------------------------------------------------------

def _layer_params(a: LMArch) -> int:
    weights = sum(i * o for _, i, o in a.linears())
    biases = (a.qkv_bias * (a.q_width + 2 * a.kv_width) + a.o_bias * a.hidden
              + a.mlp_bias * (2 * a.intermediate + a.hidden))
    return weights + biases + 2 * a.hidden  # + the two RMSNorm weights


def lm_params(a: LMArch) -> int:
    """All parameters, shared (tied) matrices once: layers, final norm, embeddings, lm_head."""
    return a.layers * _layer_params(a) + a.hidden + a.vocab_rows * a.hidden * (1 if a.tied else 2)


def lora_params(a: LMArch, rank: int) -> int:
    """PEFT's adapters with target_modules="all-linear": every decoder linear, not lm_head."""
    return a.layers * sum(rank * (i + o) for _, i, o in a.linears())


def lm_trainable(a: LMArch, train: str = "full", lora_rank: int = 8) -> int:
    mode = TRAIN_MODES.get(train)
    return lm_params(a) * mode.base_trains + lora_params(a, lora_rank) * mode.tuning


# ---- FLOPs --------------------------------------------------------------------------------

def _layer_work(a: LMArch, tokens: int, recompute: bool) -> Work:
    work = ops.attention(a.heads, tokens, tokens, a.head_dim, recompute=recompute)
    return sum((ops.linear(tokens, i, o) for _, i, o in a.linears()), work)


def _lora_work(a: LMArch, tokens: int, rank: int) -> Work:
    return sum((ops.lora(tokens, i, o, rank) for _, i, o in a.linears()), ops.ZERO)


def _head_work(a: LMArch, tokens: int) -> Work:
    return ops.linear(tokens, a.hidden, a.vocab_rows)


def lm_forward_flops(a: LMArch, seq_len: int) -> int:
    """Inference forward of one sequence: decoder layers and the logits of every position
    (LoRA adapters, if any, add `lm_cost(..., train="lora").forward` minus this: under 1%)."""
    return a.layers * _layer_work(a, seq_len, False).forward + _head_work(a, seq_len).forward


def _recomputed(a: LMArch, tokens: int, mode: Mode, rank: int) -> int:
    """One layer's forward as checkpointing recomputes it: all but the last matmul (down_proj,
    or its LoRA B), which only saves its inputs and so is never rerun."""
    layer = _layer_work(a, tokens, False).forward + mode.adapters * _lora_work(a, tokens, rank).forward
    last = 2 * tokens * a.hidden * (rank if mode.adapters else a.intermediate)
    return layer - last


def _flops(a: LMArch, tokens: int, mode: Mode, rank: int, checkpointing: bool,
           recompute: bool) -> tuple[int, int]:
    base = a.layers * _layer_work(a, tokens, recompute) + _head_work(a, tokens)
    adapters = a.layers * _lora_work(a, tokens, rank) if mode.adapters else ops.ZERO
    forward = base.forward + adapters.forward
    if mode.tuning or not mode.adapters:
        backward = base.backward(mode.base_trains, True) + adapters.backward(True, True)
    else:  # held adapters pass the gradient back through B, then A
        held = sum(ops.linear(tokens, i, rank).input_grad + ops.linear(tokens, rank, o).input_grad
                   for _, i, o in a.linears())
        backward = base.backward(False, True) + a.layers * held
    if checkpointing:
        backward += a.layers * _recomputed(a, tokens, mode, rank)
    return forward, backward


# ---- activations --------------------------------------------------------------------------

# Where each projection's input comes from: an RMSNorm output (fp32 residual stream), sdpa's
# output (saved by sdpa already), or the SwiGLU product (matmul dtype).
_SOURCE = {"q": "norm1", "k": "norm1", "v": "norm1", "o": "attention", "gate": "norm2",
           "up": "norm2", "down": "act"}


def _linear_inputs(a: LMArch, mode: Mode, p: Precision) -> int:
    """Bytes per token of the projection inputs kept for weight gradients (own weights or LoRA
    A). fp32: one storage per source. Autocast: a fp32 input is cast to bf16 by each projection
    separately; PEFT first casts every adapter input to the adapters' fp32, so under LoRA each
    lora_A keeps a bf16 copy of its own."""
    if not (mode.base_trains or mode.tuning):
        return 0
    seen, total = {"attention"}, 0
    for name, fan_in, _ in a.linears():
        source = _SOURCE[name]
        fp32_source = source.startswith("norm")
        if p.autocast and (fp32_source or mode.tuning):
            total += p.matmul_bytes * fan_in
        elif source not in seen:
            seen.add(source)
            total += (F32 if fp32_source else p.matmul_bytes) * fan_in
    return total


def _layer_bytes(a: LMArch, mode: Mode, p: Precision, rank: int) -> int:
    """Bytes per token one decoder layer saves, its input included.

    Always: each RMSNorm's input and 1/rms (x.pow(2) and x * rsqrt(..)); sdpa's q, k, v (after
    RoPE; K/V at kv_heads), output and fp32 logsumexp; SiLU's input, and the SwiGLU product's
    two factors. Full adds each RMSNorm's normalised input (for its weight's gradient); full and
    LoRA add the projection inputs (`_linear_inputs`), LoRA the A outputs (B's inputs)."""
    e, d, i = p.matmul_bytes, a.hidden, a.intermediate
    always = F32 * (2 * d + 2) + e * (2 * a.q_width + 2 * a.kv_width) + F32 * a.heads + 3 * e * i
    norms = mode.base_trains * 2 * F32 * d
    adapters = mode.tuning * len(a.linears()) * e * rank
    return always + norms + _linear_inputs(a, mode, p) + adapters


def _head_bytes(a: LMArch, mode: Mode, p: Precision, tokens: int) -> int:
    """Final norm, lm_head and loss: the norm's input and 1/rms; when they train, its normalised
    input and lm_head's input; the fp32 log-softmax of the logits (the loss upcasts them) and
    the shifted int64 labels (one padding label more) plus the loss's fp32 total weight."""
    per_token = F32 * (a.hidden + 1) + F32 * a.vocab_rows
    per_token += mode.base_trains * (F32 * a.hidden + p.matmul_bytes * a.hidden)
    return tokens * per_token + LABEL_BYTES * (tokens + 1) + F32


def _activations(a: LMArch, tokens: int, mode: Mode, p: Precision, rank: int,
                 checkpointing: bool) -> int:
    rope = tokens * 2 * F32 * a.head_dim  # cos and sin, shared by every layer
    layer = tokens * _layer_bytes(a, mode, p, rank)
    head = _head_bytes(a, mode, p, tokens)
    if not checkpointing:
        return a.layers * layer + head + rope
    # Each layer keeps only its input; the peak is at the end of the forward (head and loss
    # saved) or when backward recomputes a layer (the head's tensors are freed by then).
    kept = a.layers * tokens * F32 * a.hidden + rope
    return kept + max(head, layer - tokens * F32 * a.hidden)


def lm_cost(arch: LMArch, seq_len: int, train: str = "full", lora_rank: int = 8,
            checkpointing: bool = False, precision: str = "fp32", recompute: bool = True) -> PartCost:
    """The LM's cost per sequence of `seq_len` tokens in a training step (`params` counts
    LoRA's adapters too, as the wrapped model does).

    `backward` and `activations` are not 0 when frozen: the VLM's input embeddings need grad.
    `recompute`: attention backward as the fused GPU kernels count it (False: the math kernel
    and the meta device, 4 products instead of 5)."""
    mode, prec = TRAIN_MODES.get(train), PRECISIONS.get(precision)
    forward, backward = _flops(arch, seq_len, mode, lora_rank, checkpointing, recompute)
    params = lm_params(arch) + mode.adapters * lora_params(arch, lora_rank)
    return PartCost(params=params, trainable=lm_trainable(arch, train, lora_rank),
                    forward=forward, backward=backward,
                    activations=_activations(arch, seq_len, mode, prec, lora_rank, checkpointing))
