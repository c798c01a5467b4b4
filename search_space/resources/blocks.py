"""Cost of the connector's building blocks (linear, LayerNorm, GELU, attention, convolution),
composed the way the `trials` modules compose them: parameters, FLOPs actually spent in a
training step, and the elements autograd saves for backward.

`grad` is whether the block's input carries a gradient (it comes from something that trains);
`trains` whether the block's own weights train. A block's output carries a gradient when
either holds, which `Flow` tracks as blocks are chained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from search_space.resources import ops


@dataclass(frozen=True)
class Block:
    """Parameters, FLOPs and saved activation elements of one sample through some blocks."""

    params: int = 0
    forward: int = 0
    backward: int = 0  # spent in a training step: weight grads that train, input grads needed
    saved: int = 0     # elements autograd keeps for backward (none when nothing needs a grad)

    def __add__(self, other: Block) -> Block:
        return Block(self.params + other.params, self.forward + other.forward,
                     self.backward + other.backward, self.saved + other.saved)

    def __mul__(self, k: int) -> Block:
        return Block(self.params * k, self.forward * k, self.backward * k, self.saved * k)

    __rmul__ = __mul__


NONE = Block()


@dataclass(frozen=True)
class Flow:
    """What the blocks of one training step share: whether the weights train, whether the
    current activation carries a gradient, and whether attention backward recomputes."""

    trains: bool
    grad: bool = False
    recompute: bool = True

    @property
    def active(self) -> bool:
        """Anything here or before it needs a gradient, so backward runs through it."""
        return self.trains or self.grad

    def after(self) -> Flow:
        """The flow past a block with weights: its output carries a gradient if either did."""
        return Flow(self.trains, self.active, self.recompute)


def spent(work: ops.Work, flow: Flow, has_weights: bool = True) -> int:
    return work.backward(flow.trains and has_weights, flow.grad)


def linear(tokens: int, i: int, o: int, flow: Flow, bias: bool = True, shared_input: bool = False
           ) -> Block:
    """`nn.Linear(i, o)` on `tokens` rows; saves its input when its weights train (for their
    gradient), unless another block saved that same tensor already (`shared_input`)."""
    work = ops.linear(tokens, i, o)
    saved = tokens * i if flow.trains and not shared_input else 0
    return Block(i * o + o * bias, work.forward, spent(work, flow), saved)


def layer_norm(tokens: int, d: int, flow: Flow, shared_input: bool = False) -> Block:
    """`nn.LayerNorm(d)`: saves its input (unless saved already) and per-row mean and rstd."""
    saved = tokens * (2 + d * (not shared_input)) if flow.active else 0
    return Block(2 * d, 0, 0, saved)


def gelu(tokens: int, d: int, flow: Flow) -> Block:
    """GELU saves its input (only when a gradient passes through it)."""
    return Block(saved=tokens * d if flow.active else 0)


def attention(batch: int, heads: int, q_len: int, k_len: int, inner: int, flow: Flow) -> Block:
    """`F.scaled_dot_product_attention` over `batch` independent query sets of `heads` heads;
    it saves q, k, v, its output and the score statistics (one per query row and head)."""
    work = ops.attention(batch * heads, q_len, k_len, inner // heads, recompute=flow.recompute)
    if not flow.grad:
        return Block(forward=work.forward)
    saved = batch * (2 * q_len * inner + 2 * k_len * inner + heads * q_len)
    return Block(0, work.forward, work.input_grad, saved)


def mlp2x_gelu(tokens: int, i: int, o: int, flow: Flow) -> Block:
    """Linear(i -> o), GELU, Linear(o -> o)."""
    first = linear(tokens, i, o, flow)
    inner = flow.after()
    return first + gelu(tokens, o, inner) + linear(tokens, o, o, inner)


def ln_mlp2x_gelu(tokens: int, i: int, o: int, flow: Flow) -> Block:
    """LayerNorm(i), then Linear(i -> o), GELU, Linear(o -> o) (LEO's per-encoder projector)."""
    return layer_norm(tokens, i, flow) + mlp2x_gelu(tokens, i, o, flow.after())


def mlp4(tokens: int, d: int, flow: Flow) -> Block:
    """Linear(d -> 4d), GELU, Linear(4d -> d): the MLP of the attention blocks."""
    first = linear(tokens, d, 4 * d, flow)
    inner = flow.after()
    return first + gelu(tokens, 4 * d, inner) + linear(tokens, 4 * d, d, inner)


def inner_width(out_dim: int, heads: int) -> int:
    """`MultiHead`'s inner width: `out_dim` rounded up to a multiple of `heads`."""
    return heads * math.ceil(out_dim / heads)


def multi_head(q_tokens: int, q_dim: int, kv: list[tuple[int, int]], out_dim: int, heads: int,
               flow: Flow, kv_flow: Flow, batch: int = 1) -> Block:
    """`trials.vlm.fusion.attention.MultiHead`: queries (`batch` sets of `q_tokens` of width
    q_dim) attend to the keys of each source (`kv`: (tokens per query set, width) per source),
    each with its K/V projections, then `out`."""
    inner = inner_width(out_dim, heads)

    def proj(tokens: int, dim: int, f: Flow, again: bool = False) -> Block:
        """One input projection; `again`: the second (V) of a source whose K read it first."""
        return linear(tokens, dim, inner, f, shared_input=again)

    total = proj(batch * q_tokens, q_dim, flow)
    for tokens, dim in kv:
        total = total + proj(batch * tokens, dim, kv_flow) + proj(batch * tokens, dim, kv_flow, True)
    keys = sum(tokens for tokens, _ in kv)
    past = Flow(flow.trains, flow.active or kv_flow.active, flow.recompute)
    total = total + attention(batch, heads, q_tokens, keys, inner, Flow(False, past.active, flow.recompute))
    return total + linear(batch * q_tokens, inner, out_dim, past.after())


def depthwise_conv(h: int, w: int, channels: int, kernel: int, flow: Flow) -> Block:
    """`nn.Conv2d(c, c, k, groups=c)` with bias; saves its input."""
    work = ops.conv2d(h, w, channels, channels, kernel, groups=channels)
    saved = h * w * channels if flow.active else 0
    return Block(channels * kernel * kernel + channels, work.forward, spent(work, flow), saved)
