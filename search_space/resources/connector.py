"""The connector's cost: every expert's layer merge, the fusion operator and its projectors, as
`trials.vlm` builds them (parameters exact; a contract test holds them to the modules).

Each fusion kind registers `cost(params, experts, d_model, projector, flow) -> Block`, where
`experts` are the experts' shapes after merge (primary first) and `flow` says whether the
connector trains and whether its inputs carry gradients (an expert that trains).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from search_space.fusions import FUSIONS, Grid
from search_space.registry import Registry
from search_space.resources import blocks
from search_space.resources.blocks import NONE, Block, Flow


@dataclass(frozen=True)
class ExpertShape:
    """One expert's tokens entering the fusion: grid and width after its layer merge."""

    grid: Grid
    width: int
    grad: bool = False  # the expert trains, so its tokens carry a gradient
    depth: int = 0      # blocks of the expert (an operator inside the primary places by them)
    inner: Grid | None = None  # the grid inside the expert, before its reduction (null: `grid`)

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]


# ---- layer merges ----------------------------------------------------------------------------

MergeCost = Callable[[int, Sequence[int], Flow], Block]  # (tokens, layer widths, flow)


@dataclass(frozen=True)
class MergeRule:
    width: Callable[[Sequence[int]], int]   # channels after the merge
    cost: MergeCost


def _layerscale(tokens: int, widths: Sequence[int], flow: Flow) -> Block:
    if len(widths) == 1:
        return NONE
    out = widths[-1]
    per_layer = [blocks.layer_norm(tokens, w, flow) + blocks.linear(tokens, w, out, flow.after())
                 for w in widths]
    # the softmax-weighted sum is an einsum over the stacked layers: a product FlopCounterMode
    # counts (and its two gradients), saving the stack
    mix = 2 * len(widths) * tokens * out
    weighted = Block(len(widths), mix, 2 * mix if flow.trains else mix * flow.grad,
                     len(widths) * tokens * out if flow.active else 0)
    return sum(per_layer, NONE) + weighted  # + the softmax logits


MERGE_COSTS: Registry[MergeRule] = Registry("layer merge")
MERGE_COSTS.register("concat", MergeRule(lambda ws: sum(ws), lambda t, ws, f: NONE))
MERGE_COSTS.register("mean", MergeRule(lambda ws: ws[-1], lambda t, ws, f: NONE))
MERGE_COSTS.register("layerscale", MergeRule(lambda ws: ws[-1], _layerscale))


# ---- projectors ------------------------------------------------------------------------------

ProjectorCost = Callable[[int, int, int, Flow], Block]  # (tokens, in, out, flow)
PROJECTOR_COSTS: Registry[ProjectorCost] = Registry("projector")
PROJECTOR_COSTS.register("linear", blocks.linear)
PROJECTOR_COSTS.register("mlp2x_gelu", blocks.mlp2x_gelu)
PROJECTOR_COSTS.register("ln_mlp2x_gelu", blocks.ln_mlp2x_gelu)


def project(name: str, tokens: int, i: int, o: int, flow: Flow) -> Block:
    return PROJECTOR_COSTS.get(name)(tokens, i, o, flow)


# ---- fusion operators ------------------------------------------------------------------------

FusionCost = Callable[[object, Sequence[ExpertShape], int, str, Flow], Block]
FUSION_COSTS: Registry[FusionCost] = Registry("fusion")


def _flow(flow: Flow, experts: Sequence[ExpertShape]) -> Flow:
    return Flow(flow.trains, any(e.grad for e in experts), flow.recompute)


@FUSION_COSTS.decorator("channel_concat")
def _channel_concat(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                    flow: Flow) -> Block:
    (grid,) = FUSIONS.get("channel_concat").groups(p, [e.grid for e in experts])
    return project(projector, grid[0] * grid[1], sum(e.width for e in experts), d, _flow(flow, experts))


@FUSION_COSTS.decorator("sequence_concat")
def _sequence_concat(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                     flow: Flow) -> Block:
    total = sum((project(projector, e.tokens, e.width, d, _flow(flow, [e])) for e in experts), NONE)
    if getattr(p, "expert_embedding", False):
        total = total + Block(params=len(experts) * d)
    return total


@FUSION_COSTS.decorator("gated_injection")
def _gated_injection(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                flow: Flow) -> Block:
    primary, *secondaries = experts
    c, n, (h, w) = primary.width, primary.tokens, primary.grid
    x = _flow(flow, [primary])
    total = NONE
    for s in secondaries:
        sf = _flow(flow, [s])
        hidden = max(1, c // 2)
        total = total + (blocks.depthwise_conv(h, w, c, 7, x) + blocks.gelu(n, c, x.after())
                         + blocks.linear(n, c, c, x.after())                     # dw_out
                         + blocks.linear(n, s.width, c, sf) + blocks.gelu(n, c, sf.after())
                         + blocks.linear(n, c, c, sf.after())                    # s_out
                         + blocks.linear(1, 2 * c, hidden, x.after()) + blocks.gelu(1, hidden, x.after())
                         + blocks.linear(1, hidden, 1, x.after())                # the gate
                         + Block(saved=(n * c + 1) if flow.active else 0))        # g * s: s, tanh
        x = x.after()
    return total + project(projector, n, c, d, x)


def _stitch(c: int, inner: Grid, s: ExpertShape, x: Flow, sf: Flow, active: bool) -> Block:
    """`trials.vlm.fusion.mr_adapter.Stitch`: the secondary convolved on its own grid, aligned
    (pooling / interpolation: no FLOPs counted), the ViT tokens' DWConv branch, the gate."""
    n, (h, w), ns = inner[0] * inner[1], inner, s.tokens
    return (blocks.linear(ns, s.width, s.width, sf) + blocks.gelu(ns, s.width, sf.after())
            + blocks.linear(ns, s.width, c, sf.after())                       # slow_conv, slow_proj
            + blocks.depthwise_conv(h, w, c, 7, x) + blocks.gelu(n, c, x.after())
            + blocks.linear(n, c, c, x.after())                               # fast_conv, fast_proj
            + blocks.linear(1, 2 * c, c // 2, x.after()) + blocks.gelu(1, c // 2, x.after())
            + blocks.linear(1, c // 2, 1, x.after())                          # the gate
            + Block(saved=(n * c + 1) if active else 0))                       # s * tanh(g)


@FUSION_COSTS.decorator("mr_adapter")
def _mr_adapter(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                flow: Flow) -> Block:
    """The adapters at every position inside the primary (the ViT's own cost is the primary
    expert's part, see `estimate`), `Combine` after it, then the projector."""
    primary, *secondaries = experts
    c, n, inner = primary.width, primary.tokens, primary.inner or primary.grid
    x, total = _flow(flow, [primary]), NONE
    for _ in p.positions(primary.depth):
        for s in secondaries:
            total = total + _stitch(c, inner, s, x, _flow(flow, [s]), flow.active)
            x = x.after()
    total = total + blocks.linear(n, c, c, x) + sum(
        (blocks.linear(n, s.width, c, _flow(flow, [s])) for s in secondaries), NONE)
    return total + project(projector, n, c, d, x.after())


def window_side(grid: Grid, base: Grid) -> int:
    """M of `trials.vlm.fusion.attention.window_side`."""
    return max(1, round(math.sqrt(grid[0] * grid[1] / (base[0] * base[1]))))


@FUSION_COSTS.decorator("cross_attention")
def _cross_attention(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                     flow: Flow) -> Block:
    primary, *secondaries = experts
    n, c = primary.tokens, primary.width
    kv = [(window_side(s.grid, primary.grid) ** 2, s.width) for s in secondaries]
    attn = blocks.multi_head(1, c, kv, c, getattr(p, "heads", 1), _flow(flow, [primary]),
                             _flow(flow, secondaries), norm=True, batch=n)
    return attn + project(projector, n, c, d, Flow(flow.trains, flow.active, flow.recompute))


def _perceiver_layer(queries: int, keys: int, d: int, heads: int, flow: Flow) -> Block:
    """`PerceiverLayer`: LN, MultiHead to the keys, LN, MLP (queries carry a gradient)."""
    q = Flow(flow.trains, True, flow.recompute) if flow.trains else flow
    return (blocks.layer_norm(queries, d, q)
            + blocks.multi_head(queries, d, [(keys, d)], d, heads, q.after(), flow)
            + blocks.layer_norm(queries, d, q.after())
            + blocks.mlp4(queries, d, q.after()))


@FUSION_COSTS.decorator("resampler")
def _resampler(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
               flow: Flow) -> Block:
    m, heads, depth, w = p.queries, p.heads, p.depth, p.width or d
    total = NONE
    for e in experts:
        f = _flow(flow, [e])
        total = (total + project(projector, e.tokens, e.width, w, f) + Block(params=m * w)
                 + depth * _perceiver_layer(m, e.tokens, w, heads, f.after()))
        if w != d:  # Linear(w -> d) to the LM
            total = total + blocks.linear(m, w, d, f.after())
    return total


@FUSION_COSTS.decorator("sva")
def _sva(p: object, experts: Sequence[ExpertShape], d: int, projector: str, flow: Flow) -> Block:
    g = math.isqrt(p.queries)
    cells, heads, depth = g * g, p.heads, p.depth
    windows = [window_side(e.grid, (g, g)) ** 2 for e in experts]
    total = sum((project(projector, cells * m, e.width, d, _flow(flow, [e]))
                 for e, m in zip(experts, windows, strict=True)), NONE)
    total = total + Block(params=cells * d) + blocks.linear(1, experts[0].width, d, _flow(flow, experts[:1]))
    kv_flow = Flow(flow.trains, flow.active, flow.recompute)
    q = Flow(flow.trains, flow.trains, flow.recompute)
    layer = (blocks.multi_head(1, d, [(m, d) for m in windows], d, heads, q, kv_flow, batch=cells)
             + blocks.layer_norm(cells, d, q.after()) + blocks.mlp4(cells, d, q.after()))
    return total + depth * layer


def connector_cost(fusion: object, experts: Sequence[ExpertShape], d_model: int, projector: str,
                   flow: Flow) -> Block:
    """The fusion operator with its projector(s), for one sample."""
    return FUSION_COSTS.get(fusion.kind)(fusion, experts, d_model, projector, flow)
