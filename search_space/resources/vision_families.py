"""Each vision family's HF forward, op by op, written against `vision.Trace`.

One function per family, registered in `VISION_FAMILIES` under the family's name; each follows
the transformers 5 modeling code of its class (`modeling_clip.py`, `modeling_siglip.py`,
`modeling_dinov2*.py`, `modeling_vit_mae.py`, `modeling_sam.py`, `modeling_convnext.py`) and how
`trials/vlm/experts.py` runs it (interpolated positions, MAE with mask_ratio 0, SAM at its fixed
side). `c` is the resolved HF config (`vision.expert_config`), `size` the input side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from search_space.resources import ops
from search_space.resources.vision import VISION_FAMILIES, Act, Trace


def _ceil(n: int, k: int) -> int:
    return -(-n // k) * k


@dataclass(frozen=True)
class Block:
    """A pre-norm transformer block: width, heads, MLP and the family's variations."""

    width: int
    heads: int
    head_dim: int
    mlp: int
    act: str
    qkv_bias: bool = True
    layer_scale: bool = False  # DINOv2: each branch scaled by a per-channel parameter
    swiglu: bool = False       # DINOv2 giant: SwiGLU feed-forward


def _block(c: dict[str, Any], **kwargs: Any) -> Block:
    width, heads = c["hidden_size"], c["num_attention_heads"]
    return Block(width, heads, c.get("head_dim") or width // heads, c["intermediate_size"],
                 c["hidden_act"], **kwargs)


def _attention(t: Trace, b: Block, x: Act, n: int) -> Act:
    inner = b.heads * b.head_dim
    q, k, v = (t.linear(x, n, b.width, inner, b.qkv_bias) for _ in range(3))
    out = t.attention(q, k, v, b.heads, n, n, b.head_dim)
    return t.linear(out, n, inner, b.width)  # the kernel's (N, H, D) output is its input as is


def _mlp(t: Trace, b: Block, x: Act, n: int) -> Act:
    if b.swiglu:
        gate = t.activation(t.linear(x, n, b.width, b.mlp), "silu")
        up = t.linear(x, n, b.width, b.mlp)
        if gate.grad or up.grad:
            t.save(gate, up)  # the product saves both factors
        return t.linear(t.new(n * b.mlp, up.dtype, gate.grad or up.grad), n, b.mlp, b.width)
    hidden = t.activation(t.linear(x, n, b.width, b.mlp), b.act)
    return t.linear(hidden, n, b.mlp, b.width)


def _residual(t: Trace, b: Block, x: Act, branch: Act) -> Act:
    return t.add(x, t.scale(branch, b.width) if b.layer_scale else branch)


def _encoder(t: Trace, b: Block, x: Act, n: int, layers: int) -> Act:
    for index in range(layers):
        if index == t.grad_from:  # an adapter's output (mr_adapter) carries a gradient from here on
            x = t.new(x.numel, x.dtype, True)
        x = _residual(t, b, x, _attention(t, b, t.norm(x, b.width), n))
        x = _residual(t, b, x, _mlp(t, b, t.norm(x, b.width), n))
    return x


def _patches(t: Trace, c: dict[str, Any], size: int, width: int, bias: bool = True) -> Act:
    g, p = size // c["patch_size"], c["patch_size"]
    return t.conv(t.pixels(3 * size * size), (g, g), c["num_channels"], width, p, bias=bias)


def _native_grid(c: dict[str, Any]) -> int:
    """Patches of the config's image: the size of the (interpolated) position table."""
    return (c["image_size"] // c["patch_size"]) ** 2


@VISION_FAMILIES.decorator("clip", "CLIPVisionModel: class token, pre/post LayerNorm, quick GELU")
def clip(t: Trace, c: dict[str, Any], size: int) -> None:
    b, n = _block(c), (size // c["patch_size"]) ** 2 + 1
    patches = _patches(t, c, size, b.width, bias=False)
    t.weights(b.width + (_native_grid(c) + 1) * b.width)  # class embedding, position table
    x = t.norm(t.new(n * b.width, "fp32", patches.grad or t.full), b.width)  # pre_layrnorm
    x = _encoder(t, b, x, n, c["num_hidden_layers"])
    with t.tail():
        t.norm(t.view(x, b.width), b.width)  # post_layernorm of the class token, a view of x


@VISION_FAMILIES.decorator("siglip", "SiglipVisionModel: no class token, attention-pooling head")
def siglip(t: Trace, c: dict[str, Any], size: int) -> None:
    b, n = _block(c), (size // c["patch_size"]) ** 2
    patches = _patches(t, c, size, b.width)
    t.weights(_native_grid(c) * b.width)  # position table
    x = _encoder(t, b, t.new(n * b.width, "fp32", patches.grad), n, c["num_hidden_layers"])
    with t.tail():
        x = t.norm(x, b.width)  # post_layernorm
        if c["vision_use_head"]:
            _pooling_head(t, b, x, n)


def _pooling_head(t: Trace, b: Block, x: Act, n: int) -> None:
    """A learned probe attends over the tokens (`nn.MultiheadAttention`, need_weights=True: plain
    bmm and softmax), then LayerNorm and the MLP on that one token."""
    width = b.width
    t.weights(width + 3 * width * width + 3 * width)  # probe, in_proj weight and bias
    q = t.linear(t.new(width, "fp32", t.full), 1, width, width, lora=False, own_weights=False)
    kv = t.linear(x, n, width, 2 * width, lora=False, own_weights=False)
    t.work(ops.attention(b.heads, 1, n, width // b.heads, recompute=False), False, True)
    grad = q.grad or kv.grad
    probs = t.new(b.heads * n, "fp32" if t.amp and t.policy.fp32_reductions else t.low, grad)
    if grad:
        t.save(probs, kv)  # softmax's result; v (and k^T) for the products' gradients
    if kv.grad:
        t.save(t.new(width, t.low, q.grad))  # the scaled query, for k's gradient
    out = t.linear(t.new(width, t.low, grad), 1, width, width, lora=False)  # out_proj
    if t.lora:
        t.adapter(t.rank * 2 * width)  # PEFT wraps out_proj, but MHA reads out_proj.weight
    t.add(out, _mlp(t, b, t.norm(out, width), 1))


def _dinov2_embeddings(t: Trace, c: dict[str, Any], size: int, width: int) -> tuple[Act, int]:
    patches = _patches(t, c, size, width)
    registers = c["num_register_tokens"]  # (the registers class always has a mask token)
    t.weights(width * (1 + bool(c["use_mask_token"]) + registers + _native_grid(c) + 1))
    n = (size // c["patch_size"]) ** 2 + 1 + registers  # class token, registers, patches
    return t.new(n * width, "fp32", patches.grad or t.full), n


@VISION_FAMILIES.decorator("dinov2", "Dinov2Model (and with registers): layer scale, final norm")
def dinov2(t: Trace, c: dict[str, Any], size: int) -> None:
    width = c["hidden_size"]
    mlp = int(width * c["mlp_ratio"])
    if c["use_swiglu_ffn"]:
        mlp = (int(mlp * 2 / 3) + 7) // 8 * 8
    b = Block(width, c["num_attention_heads"], c.get("head_dim") or width // c["num_attention_heads"],
              mlp, c["hidden_act"], c["qkv_bias"], layer_scale=True, swiglu=c["use_swiglu_ffn"])
    x, n = _dinov2_embeddings(t, c, size, width)
    x = _encoder(t, b, x, n, c["num_hidden_layers"])
    with t.tail():
        t.norm(x, width)  # layernorm


@VISION_FAMILIES.decorator("mae", "ViTMAEModel at mask_ratio 0: every patch kept, final norm")
def mae(t: Trace, c: dict[str, Any], size: int) -> None:
    b, patches_n = _block(c, qkv_bias=c["qkv_bias"]), (size // c["patch_size"]) ** 2
    patches = _patches(t, c, size, b.width)
    t.weights(b.width + (_native_grid(c) + 1) * b.width)  # class token, position table
    x = t.new(patches_n * b.width, "fp32", patches.grad or t.full)  # + positions
    if x.grad:  # random_masking's gather saves its input and an index repeated over channels
        t.save(x, t.new(patches_n * b.width, "int64", False))
    x = t.new((patches_n + 1) * b.width, "fp32", x.grad)  # gathered, class token prepended
    x = _encoder(t, b, x, patches_n + 1, c["num_hidden_layers"])
    with t.tail():
        t.norm(x, b.width)  # layernorm


@VISION_FAMILIES.decorator("internvit", "InternVisionModel (remote code): class token, layer scale, "
                                       "no final norm")
def internvit(t: Trace, c: dict[str, Any], size: int) -> None:
    """LEO's `modeling_intern_vit.py` (Mozhgan91/LEO at d2787c6): patch conv with bias, class
    embedding and position table, pre-LN blocks with ls1/ls2 layer scale (qkv one Linear: the
    parameters and FLOPs of three), no norm after the encoder. RMSNorm / qk-normalisation
    variants (InternViT-6B) are not modelled."""
    width = c["hidden_size"]
    b = _block(c, qkv_bias=c["qkv_bias"], layer_scale=True)
    patches = _patches(t, c, size, width)
    t.weights(width + (_native_grid(c) + 1) * width)  # class embedding, position table
    n = (size // c["patch_size"]) ** 2 + 1
    x = t.new(n * width, "fp32", patches.grad or t.full)
    _encoder(t, b, x, n, c["num_hidden_layers"])


@VISION_FAMILIES.decorator("sam", "SamVisionModel: windowed + global attention, rel-pos, neck")
def sam(t: Trace, c: dict[str, Any], size: int) -> None:
    width, g = c["hidden_size"], size // c["patch_size"]
    b = Block(width, c["num_attention_heads"], width // c["num_attention_heads"],
              c["mlp_dim"] or int(width * c["mlp_ratio"]), c["hidden_act"], c["qkv_bias"])
    x = _patches(t, c, size, width)
    if c["use_abs_pos"]:
        t.weights(g * g * width)  # pos_embed (1, g, g, C), fp32
        x = t.new(x.numel, "fp32", x.grad)
    for i in range(c["num_hidden_layers"]):
        window = 0 if i in c["global_attn_indexes"] else c["window_size"]
        x = _sam_layer(t, c, b, x, g, window)
    with t.tail(read=t.neck):  # the neck, on the channels-first view of the last state
        out = c["output_channels"]
        y = t.norm(t.conv(t.view(x, g * g * width), (g, g), width, out, 1, bias=False), out)
        t.norm(t.conv(y, (g, g), out, out, 3, bias=False), out)


def _sam_layer(t: Trace, c: dict[str, Any], b: Block, x: Act, g: int, window: int) -> Act:
    h = t.norm(x, b.width)
    side, windows = (window, (_ceil(g, window) // window) ** 2) if window else (g, 1)
    tokens = side * side * windows  # padded to whole windows
    if window:  # pad + partition: a contiguous copy (B * windows, w, w, C)
        h = t.new(tokens * b.width, h.dtype, h.grad)
    a = _sam_attention(t, c, b, h, side, windows)
    x = t.add(x, t.new(g * g * b.width, a.dtype, a.grad))  # unpartitioned, padding cut
    return t.add(x, _mlp(t, b, t.norm(x, b.width), g * g))


def _sam_attention(t: Trace, c: dict[str, Any], b: Block, h: Act, side: int, windows: int) -> Act:
    n, bh, width = side * side, windows * b.heads, b.width
    qkv = t.linear(h, windows * n, width, 3 * width, b.qkv_bias)
    qkv = t.new(qkv.numel, qkv.dtype, qkv.grad)  # reshape(3, B*heads, N, D) of a permute: copy
    q = t.view(qkv, windows * n * width)
    if not c["use_rel_pos"]:
        out = t.attention(q, q, q, bh, n, n, b.head_dim)  # q, k, v: views of one storage
    else:
        t.weights(2 * (2 * side - 1) * b.head_dim)  # rel_pos_h, rel_pos_w
        out = _biased_attention(t, qkv, q, _rel_pos_bias(t, q, bh, side, b.head_dim), bh, n, b.head_dim)
    return t.linear(out, windows * n, width, width)  # proj


def _rel_pos_bias(t: Trace, q: Act, bh: int, side: int, head_dim: int) -> Act:
    """einsum("bhwc,hkc->bhwk") and ("bhwc,wkc->bhwk") of q with the interpolated tables (bmm
    batched over one side), broadcast-added into a (B*heads, N, N) bias."""
    einsum = ops.linear(bh * side * side, head_dim, side)  # per side: q rows x (head_dim x side)
    t.work(einsum * 2, t.full, q.grad)
    if t.full:  # the tables train: the products save q, permuted (a copy for h, a view for w)
        t.save(t.new(q.numel, q.dtype, q.grad), q)
    return t.new(bh * side ** 4, t.low, q.grad or t.full)


def _biased_attention(t: Trace, qkv: Act, q: Act, bias: Act, bh: int, n: int, head_dim: int) -> Act:
    """SDPA with a bias that needs a gradient. CUDA: the memory-efficient kernel saves q, k, v,
    the bias (last dim padded to 16), its output (already in the (N, H, D) layout proj reads)
    and the log-sum-exp (padded to 32). CPU: the math path, in fp32, saves the scaled q and k,
    the probabilities and v, and proj reads a permuted copy of its output."""
    grad = q.grad or bias.grad
    t.work(ops.attention(bh, n, n, head_dim, recompute=t.recompute), False, grad)
    out = t.new(bh * n * head_dim, t.low, grad)
    if not grad:
        return out
    if t.policy.fused_biased_attention:
        padded = bias if n % 16 == 0 else t.new(bh * n * _ceil(n, 16), bias.dtype, True)
        t.save(qkv, padded, out, t.new(bh * _ceil(n, 32), "fp32", True))
        return out
    q_k = [t.new(q.numel, "fp32", True) for _ in range(2)]
    v = t.new(q.numel, "fp32", True) if qkv.dtype != "fp32" else qkv
    t.save(*q_k, t.new(bh * n * n, "fp32", True), v)
    return out


@VISION_FAMILIES.decorator("convnext", "ConvNextModel: depthwise 7x7 blocks in four stages")
def convnext(t: Trace, c: dict[str, Any], size: int) -> None:
    widths, s = c["hidden_sizes"], size // c["patch_size"]
    x = t.conv(t.pixels(3 * size * size), (s, s), c["num_channels"], widths[0], c["patch_size"])
    x = t.norm(x, widths[0])  # channels-first LayerNorm: a permuted view, normalized
    for i, (width, depth) in enumerate(zip(widths, c["depths"], strict=True)):
        if i > 0:  # downsampling: LayerNorm, then a 2x2 stride-2 convolution
            s //= 2
            x = t.conv(t.norm(x, widths[i - 1]), (s, s), widths[i - 1], width, 2)
        for _ in range(depth):
            x = _convnext_block(t, c, x, s, width)
    with t.tail():  # layernorm of the spatial mean
        t.norm(t.new(widths[-1], x.dtype, x.grad), widths[-1])


def _convnext_block(t: Trace, c: dict[str, Any], x: Act, s: int, width: int) -> Act:
    y = t.norm(t.conv(x, (s, s), width, width, 7, groups=width), width)  # dwconv, channels last
    y = t.linear(t.activation(t.linear(y, s * s, width, 4 * width), c["hidden_act"]),
                 s * s, 4 * width, width)  # pwconv1, act, pwconv2
    if c["layer_scale_init_value"] > 0:
        y = t.scale(y, width)
    return t.add(x, y)
