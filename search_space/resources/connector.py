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

from search_space.errors import InvalidDesign
from search_space.fusions import FUSIONS, Grid, per_expert
from search_space.registry import Registry
from search_space.resources import blocks
from search_space.resources.blocks import NONE, Block, Flow, layer_norm


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

# (params, experts, d, projector: one name or, for a per-expert operator, one per expert, flow)
FusionCost = Callable[[object, Sequence[ExpertShape], int, "str | Sequence[str]", Flow], Block]
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
    names = per_expert(projector, len(experts))
    total = sum((project(name, e.tokens, e.width, d, _flow(flow, [e]))
                 for name, e in zip(names, experts, strict=True)), NONE)
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


def _window_attention(n: int, keys: int, c: int, heads: int, q_grad: bool, kv_grad: bool) -> Block:
    """`trials.vlm.fusion.cross_attention.attend` over H heads: `n` queries of width c, each on
    its own `keys` keys. Forward: Q K^T and A V, 2*n*keys*c FLOPs each over all heads. Backward:
    grad-Q (Q needs one) and grad-K (K does) of the first, grad-A (either) and grad-V (V does) of
    the second. Saved: K/sqrt(c_h) for grad-Q, Q for grad-K, nan_to_num's input and softmax's
    output (H scores per key and query), V for grad-A (A is softmax's output, saved once)."""
    product, either = 2 * n * keys * c, q_grad or kv_grad
    backward = product * (q_grad + kv_grad + either + kv_grad)
    saved = n * keys * c * q_grad + n * c * kv_grad + (2 * n * heads * keys + n * keys * c) * either
    return Block(0, 2 * product, backward, saved)


@FUSION_COSTS.decorator("cross_attention")
def _cross_attention(p: object, experts: Sequence[ExpertShape], d: int, projector: str,
                     flow: Flow) -> Block:
    """Mini-Gemini's patch info mining as `trials.vlm.fusion.cross_attention` builds it:
    LN + Linear(C -> C) on the primary's N tokens; per secondary, LN + Linear(C_k -> C) for K and
    for V on its N * M_k^2 window tokens (both LNs read one tensor, saved once); the window
    attention; `X + A V` (no FLOPs); the projector on N tokens."""
    primary, *secondaries = experts
    n, c, heads = primary.tokens, primary.width, getattr(p, "heads", 1)
    if heads > c:
        raise InvalidDesign(f"cross_attention heads {heads} exceed the primary expert's width {c}; "
                            f"use at most {c} heads")
    q = _flow(flow, [primary])
    total, keys = blocks.layer_norm(n, c, q) + blocks.linear(n, c, c, q.after()), 0
    for s in secondaries:
        m2, f = window_side(s.grid, primary.grid) ** 2, _flow(flow, [s])
        rows = n * m2
        for again in (False, True):  # K, then V
            total = (total + blocks.layer_norm(rows, s.width, f, shared_input=again)
                     + blocks.linear(rows, s.width, c, f.after()))
        keys += m2
    kv = _flow(flow, secondaries)
    total = total + _window_attention(n, keys, c, heads, q.after().active, kv.after().active)
    return total + project(projector, n, c, d, _flow(flow, experts).after())  # X + A V


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
    for name, e in zip(per_expert(projector, len(experts)), experts, strict=True):
        f = _flow(flow, [e])
        total = (total + project(name, e.tokens, e.width, w, f) + Block(params=m * w)
                 + depth * _perceiver_layer(m, e.tokens, w, heads, f.after()))
        if w != d:  # Linear(w -> d) to the LM
            total = total + blocks.linear(m, w, d, f.after())
    return total


def _norm_linear(tokens: int, i: int, o: int, flow: Flow, again: bool = False) -> Block:
    """LayerNorm(i) then Linear(i -> o) without bias; `again`: a second LN on a saved input."""
    return (layer_norm(tokens, i, flow, shared_input=again)
            + blocks.linear(tokens, i, o, flow.after(), bias=False))


def _sva_layer(cells: int, w: int, windows: Sequence[int], heads: int, q: Flow,
               kvs: Sequence[Flow]) -> Block:
    """`trials.vlm.fusion.sva.SVALayer` (Cambrian's VisionCrossAttentionLayer) on one sample:
    `q` the queries' flow, `kvs` each expert's projected tokens' (the first one's mean is the
    context)."""
    inner = blocks.inner_width(w, heads)
    total = (blocks.linear(1, w, w, kvs[0], bias=False)                   # proj_context, once
             + blocks.linear(cells, 2 * w, w, q, bias=False))             # proj_in on [q, ctx]
    x = q.after()
    total = total + _norm_linear(cells, w, inner, x)                      # q_proj
    for m, f in zip(windows, kvs, strict=True):
        keys = f.after() if m > 1 else f                                  # + pos_embed (trains)
        total = (total + Block(params=m * m * w if m > 1 else 0)
                 + _norm_linear(cells * m * m, w, inner, keys)            # k_proj_i
                 + _norm_linear(cells * m * m, w, inner, keys, again=True))  # v_proj_i
    past = Flow(q.trains, x.active or any(f.active for f in kvs), q.recompute)
    keys = sum(m * m for m in windows)
    total = (total + blocks.attention(cells, heads, 1, keys, inner, Flow(False, past.active, q.recompute))
             + blocks.linear(cells, inner, w, past.after(), bias=False))   # o_proj
    if past.active and not x.active:  # only the keys need a gradient: no product into the queries
        total = total + Block(backward=-2 * cells * keys * inner)
    y = past.after()
    return (total + layer_norm(cells, w, y) + blocks.linear(cells, w, w, y.after(), bias=False)
            + blocks.gelu(cells, w, y.after()) + blocks.linear(cells, w, w, y.after(), bias=False))


@FUSION_COSTS.decorator("sva")
def _sva(p: object, experts: Sequence[ExpertShape], d: int, projector: str, flow: Flow) -> Block:
    """`trials.vlm.fusion.sva.SVAFusion` (Cambrian's connector): per-expert LN-ended MLPs into
    the width W, `depth` SVA layers over the G x G cells, the projector W -> d, the newlines."""
    g, w = math.isqrt(p.queries), p.width
    cells, windows = g * g, [window_side(e.grid, (g, g)) for e in experts]
    total, kvs = NONE, []
    for e in experts:  # mm_projector_aux_k: Linear, GELU, Linear, LayerNorm on the expert's grid
        f = _flow(flow, [e])
        total = (total + blocks.linear(e.tokens, e.width, w, f) + blocks.gelu(e.tokens, w, f.after())
                 + blocks.linear(e.tokens, w, w, f.after()) + layer_norm(e.tokens, w, f.after()))
        kvs.append(f.after())
    q = Flow(flow.trains, flow.trains or kvs[0].active, flow.recompute)  # vision_query and context
    total = total + Block(params=w) + Block(params=d if p.newline else 0)  # vision_query, image_newline
    for _ in range(p.depth):
        total = total + _sva_layer(cells, w, windows, p.heads, q, kvs)
        q = Flow(q.trains, q.active or any(f.active for f in kvs), q.recompute)
    return total + project(projector, cells, w, d, q)


def connector_cost(fusion: object, experts: Sequence[ExpertShape], d_model: int,
                   projector: str | Sequence[str], flow: Flow) -> Block:
    """The fusion operator with its projector(s), for one sample."""
    return FUSION_COSTS.get(fusion.kind)(fusion, experts, d_model, projector, flow)
