"""Parity of the sva fusion with Cambrian-1's Spatial Vision Aggregator, and its size at paper scale.

Reference: written here from cambrian-mllm/cambrian at commit
539ffc3254bba004e5d012b65c0ad6cb308897c5:
- cambrian/model/vision_sampler.py: `MultiKVCrossAttention`, `MLP`, `VisionCrossAttentionLayer`
  and `VisionTokenSampler` (layer_type "joint"), as they are there (the commented-out code left
  out, num_heads 16 hard-coded as there);
- cambrian/model/cambrian_arch.py: the connector's modules of `CambrianMetaModel.__init__` (sva
  branch: `mm_projector`, `mm_projector_aux_{i}`, `vision_sampler_{g}`, `vision_query`,
  `image_newline`) and the sva branch of `prepare_inputs_labels_for_multimodal`, with
  `rearrange_vision_tower_features_train` cutting the windows (all-True masks, as inference
  makes them for square images), one query group and the newline concatenation after
  `mm_projector`.
Both are built on the same random weights (every LayerNorm too), the reference's state dict
loaded into the module through the names' map; outputs equal within 1e-5 in fp32.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from search_space import SVA
from search_space.cost import expert_grid
from search_space.load import load_point
from search_space.resources.blocks import Flow
from search_space.resources.connector import ExpertShape, connector_cost
from trials.vlm.experts import out_width
from trials.vlm.fusion import build_fusion
from trials.vlm.reduce import Features

# ---- the reference, from vision_sampler.py ----------------------------------------------------


class MultiKVCrossAttention(nn.Module):
    def __init__(self, q_dim, kv_dim_list, hidden_dim, num_heads, attention_bias=False):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = self.hidden_dim // self.num_heads
        self.q_proj = nn.Sequential(nn.LayerNorm(q_dim),
                                    nn.Linear(q_dim, self.num_heads * self.head_dim, bias=attention_bias))
        self.num_of_kvs = len(kv_dim_list)
        for i, kv_dim in enumerate(kv_dim_list):
            setattr(self, f"k_proj_{i}", nn.Sequential(nn.LayerNorm(kv_dim), nn.Linear(
                kv_dim, self.num_heads * self.head_dim, bias=attention_bias)))
            setattr(self, f"v_proj_{i}", nn.Sequential(nn.LayerNorm(kv_dim), nn.Linear(
                kv_dim, self.num_heads * self.head_dim, bias=attention_bias)))
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, q_dim, bias=attention_bias)

    def forward(self, queries, *vision_latents_attention_mask_list):
        vision_latents_list = vision_latents_attention_mask_list[:self.num_of_kvs]
        attention_mask_list = vision_latents_attention_mask_list[self.num_of_kvs:]
        bsz, q_len, _ = queries.size()
        query_states = self.q_proj(queries)
        key_states = torch.cat([getattr(self, f"k_proj_{i}")(vision_latents_list[i])
                                for i in range(self.num_of_kvs)], dim=1)
        value_states = torch.cat([getattr(self, f"v_proj_{i}")(vision_latents_list[i])
                                  for i in range(self.num_of_kvs)], dim=1)
        v_len = key_states.shape[1]
        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, v_len, self.num_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, v_len, self.num_heads, self.head_dim).transpose(1, 2)
        attention_mask = torch.cat(attention_mask_list, dim=-1)
        assert attention_mask.size() == (bsz, 1, q_len, v_len)
        attn_output = torch.nn.functional.scaled_dot_product_attention(
            query_states, key_states, value_states, attn_mask=attention_mask)
        attn_output = attn_output.transpose(1, 2).contiguous().reshape(bsz, q_len, self.hidden_dim)
        return self.o_proj(attn_output)


class MLP(nn.Module):
    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.linear_1 = nn.Linear(d_in, d_hidden, bias=False)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_hidden, d_out, bias=False)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class VisionCrossAttentionLayer(nn.Module):
    def __init__(self, q_dim, context_dim, kv_dim_list, kv_size_list, hidden_dim=1024, layer_idx=0):
        super().__init__()
        num_heads = 16
        self.num_of_kvs = len(kv_dim_list)
        self.proj_context = nn.Linear(context_dim, hidden_dim, bias=False)
        self.proj_in = nn.Linear(q_dim + hidden_dim, hidden_dim, bias=False)
        self.proj_out = MLP(hidden_dim, hidden_dim, q_dim)
        self.norm = nn.LayerNorm(hidden_dim)
        self.cross_attn = MultiKVCrossAttention(hidden_dim, kv_dim_list, hidden_dim, num_heads)
        self.kv_size_list = kv_size_list
        for i, kv_size in enumerate(kv_size_list):
            if kv_size > 1:
                setattr(self, f"pos_embed_{i}", nn.Parameter(torch.randn(kv_size**2, hidden_dim)))

    def forward(self, queries, context_feature, *vision_latents_attention_mask_list):
        residual = queries
        context_feature = self.proj_context(context_feature)
        queries = torch.cat([queries, context_feature], -1)
        queries = self.proj_in(queries)
        vision_latents_list = vision_latents_attention_mask_list[:self.num_of_kvs]
        attention_mask_list = vision_latents_attention_mask_list[self.num_of_kvs:]
        attention_mask_list_reshaped = []
        for attention_mask in attention_mask_list:
            attention_mask = attention_mask.view(attention_mask.shape[0], 1, 1, -1)
            attention_mask = attention_mask.expand(-1, -1, queries.shape[1], -1)
            attention_mask_list_reshaped.append(attention_mask)
        vision_latents_pos_list = []
        for i, vision_latents in enumerate(vision_latents_list):
            if vision_latents.shape[1] > 1:
                vision_latents_pos_list.append(
                    vision_latents + getattr(self, f"pos_embed_{i}")[None, :, :].to(vision_latents.dtype))
            else:
                vision_latents_pos_list.append(vision_latents)
        attention_output = self.cross_attn(queries, *vision_latents_pos_list, *attention_mask_list_reshaped)
        queries = queries + attention_output
        queries = self.norm(queries)
        queries = self.proj_out(queries)
        return queries + residual


class VisionTokenSampler(nn.Module):
    def __init__(self, q_dim, context_dim, kv_dim_list, kv_size_list, vision_hidden_size, num_of_layers=1):
        super().__init__()
        self.layers = nn.ModuleList([VisionCrossAttentionLayer(q_dim, context_dim, kv_dim_list, kv_size_list,
                                                               vision_hidden_size, idx)
                                     for idx in range(num_of_layers)])

    def forward(self, queries, context_feature, *vision_latents_attention_mask_list):
        for layer in self.layers:
            queries = layer(queries, context_feature, *vision_latents_attention_mask_list)
        return queries


# ---- the reference, from cambrian_arch.py ------------------------------------------------------


class CambrianConnector(nn.Module):
    """`CambrianMetaModel`'s sva modules (one query group of `image_token_len` queries)."""

    def __init__(self, aux_hidden_sizes, aux_token_lens, image_token_len, vision_hidden_size,
                 hidden_size, connector_depth):
        super().__init__()
        num_query_group, query_num_list = 1, [image_token_len]
        self.image_token_len = image_token_len
        self.mm_projector = nn.Sequential(nn.Linear(vision_hidden_size * num_query_group, hidden_size),
                                          nn.GELU(), nn.Linear(hidden_size, hidden_size))
        for aux_i, aux_hidden in enumerate(aux_hidden_sizes):
            setattr(self, f"mm_projector_aux_{aux_i}", nn.Sequential(
                nn.Linear(aux_hidden, vision_hidden_size), nn.GELU(),
                nn.Linear(vision_hidden_size, vision_hidden_size), nn.LayerNorm(vision_hidden_size)))
        for query_group_i in range(num_query_group):
            cross_att_token_len_list = [int(n**0.5) // int(query_num_list[query_group_i]**0.5)
                                        for n in aux_token_lens]
            setattr(self, f"vision_sampler_{query_group_i}", VisionTokenSampler(
                vision_hidden_size, vision_hidden_size, [vision_hidden_size] * len(aux_hidden_sizes),
                cross_att_token_len_list, vision_hidden_size, connector_depth))
        self.vision_query = nn.Parameter(torch.randn((num_query_group, vision_hidden_size)))
        self.image_newline = nn.Parameter(torch.randn(hidden_size))

    @staticmethod
    def rearrange_vision_tower_features_train(feature_list, masks_list, query_side_len):
        rearranged, masks_rearranged = [], []
        bs = feature_list[0].shape[0]
        for feature, masks in zip(feature_list, masks_list, strict=True):
            aux_height = int(feature.shape[1]**0.5)
            assert (aux_height // query_side_len) * query_side_len == aux_height
            reduce_factor = aux_height // query_side_len
            x = feature.view(bs, query_side_len, reduce_factor, query_side_len, reduce_factor, -1)
            x = x.permute(0, 1, 3, 2, 4, 5).contiguous().flatten(0, 2).flatten(1, 2)
            rearranged.append(x)
            masks_rearranged.append(masks.view(bs * query_side_len * query_side_len,
                                               reduce_factor * reduce_factor))
        return rearranged, masks_rearranged

    def forward(self, image_aux_features_list: list[Tensor], newline: bool) -> Tensor:
        bs = image_aux_features_list[0].shape[0]
        final_height = final_width = int(self.image_token_len**0.5)
        vision_tower_aux_feature_list, masks = [], []
        for aux_i, image_aux_features in enumerate(image_aux_features_list):
            image_aux_features = getattr(self, f"mm_projector_aux_{aux_i}")(image_aux_features)
            if aux_i == 0:
                global_context_feature = image_aux_features.mean(1).view(bs, 1, 1, -1)
            vision_tower_aux_feature_list.append(image_aux_features)
            masks.append(torch.ones(bs, image_aux_features.shape[1], dtype=torch.bool))
        final_image_features_list = []
        for query_group_i, query_num in enumerate([self.image_token_len]):
            query_features_i = self.vision_query[query_group_i, :].view(1, 1, 1, -1).expand(
                bs, query_num, -1, -1)
            global_context_feature_i = global_context_feature.expand(-1, query_num, 1, -1).flatten(0, 1)
            query_side_len = int(query_num**0.5)
            feats_i, masks_i = self.rearrange_vision_tower_features_train(
                vision_tower_aux_feature_list, masks, query_side_len)
            query_features_i = getattr(self, f"vision_sampler_{query_group_i}")(
                query_features_i.flatten(0, 1), global_context_feature_i, *feats_i, *masks_i)
            final_image_features_list.append(query_features_i.view(bs, query_num, -1))
        image_features = torch.cat(final_image_features_list, -1)
        image_features = self.mm_projector(image_features)
        if not newline:
            return image_features
        image_features = image_features.view(image_features.shape[0], final_height, final_width, -1)
        image_features = torch.cat((image_features, self.image_newline[None, None, None, :].expand(
            image_features.shape[0], final_height, 1, -1)), dim=2)
        return image_features.flatten(1, 2)


# ---- parity ------------------------------------------------------------------------------------

W, D, B = 32, 24, 2  # W divisible by Cambrian's 16 heads
CASES = {  # (queries, [(side, width) per expert]): window sides side // G of 1 and > 1
    "2-experts": (4, [(4, 16), (2, 24)]),               # G = 2: windows 2, 1
    "3-experts": (9, [(3, 20), (6, 12), (9, 28)]),      # G = 3: windows 1, 2, 3
}
RENAMES = [(r"^mm_projector_aux_(\d+)\.", r"mm_projector_aux.\1."), (r"^vision_sampler_0\.", "")]


def ours_from_theirs(state: dict[str, Tensor], newline: bool) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in RENAMES:
            key = re.sub(pattern, repl, key)
        if key != "image_newline" or newline:
            out[key] = value
    return out


@pytest.mark.parametrize("newline", [False, True], ids=["no-newline", "newline"])
@pytest.mark.parametrize("case", CASES)
def test_sva_equals_cambrian(case: str, newline: bool) -> None:
    queries, experts = CASES[case]
    torch.manual_seed(0)
    ref = CambrianConnector([c for _, c in experts], [s * s for s, _ in experts], queries, W, D, 2)
    with torch.no_grad():
        for p in ref.parameters():  # every weight random, LayerNorms and all
            p.normal_(std=0.3)
    params = SVA(queries=queries, depth=2, heads=16, width=W, newline=newline)
    module = build_fusion(params, [c for _, c in experts], D, "mlp2x_gelu",
                          grids=[(s, s) for s, _ in experts])
    module.load_state_dict(ours_from_theirs(ref.state_dict(), newline), strict=True)
    feats = [torch.randn(B, s * s, c) for s, c in experts]
    out = module([Features(f, (s, s)) for f, (s, _) in zip(feats, experts, strict=True)])
    g = int(queries**0.5)
    assert out.grids == [(g, g + newline)]
    with torch.no_grad():
        expected = ref(feats, newline)
    torch.testing.assert_close(out.tokens.detach(), expected, rtol=0, atol=1e-5)


# ---- size at Cambrian-1's configuration --------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]
CAMBRIAN_1 = [((24, 24), 1152), ((24, 24), 1024), ((24, 24), 1536), ((96, 96), 5760)]  # see below


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _paper_scale(params: SVA, shapes: list[tuple[tuple[int, int], int]]) -> tuple[int, int]:
    """(cost model's parameters, the module's built on the meta device) at LM width 4096."""
    est = connector_cost(params, [ExpertShape(g, c) for g, c in shapes], 4096, "mlp2x_gelu", Flow(True))
    with torch.device("meta"):
        module = build_fusion(params, [c for _, c in shapes], 4096, "mlp2x_gelu",
                              grids=[g for g, _ in shapes])
    return est.params, _count(module)


def test_connector_size_at_cambrian_scale() -> None:
    """The connector at Cambrian-1's configuration (width 1024, 576 queries, depth 3, 16 heads,
    mlp2x_gelu to an LM 4096 wide, newline), cost model = module built on the meta device:

    - examples/papers/cambrian.yaml (SigLIP-so400m 27x27x1152 -> window 1, DINOv2-L at 518
      37x37x1024 -> window 2, ConvNeXt-L at 1024 32x32x1536 -> window 1): 68,899,840;
    - Cambrian-1-8B's own four experts (scripts/cambrian/finetune_cambrian_8b.sh: SigLIP-SO400M
      1152, CLIP-L/336 1024, DINOv2-giant 1536 at 576 tokens, ConvNeXt-XXL multi-stage
      384+768+1536+3072 = 5760 at 9216 tokens -> windows 1, 1, 1, 4): 82,191,360 = 13.9 M
      expert projectors + 47.3 M for the three SVA layers + 21.0 M mm_projector + query and
      newline; the reference above, built on the meta device, has the same count. REFERENCE.md's
      estimate was ~77 M; the code gives 82.2 M (without the SVA layers inside the LLM).
    """
    params = SVA(queries=576, depth=3, heads=16, width=1024, newline=True)
    point, _ = load_point(ROOT / "examples/papers/cambrian.yaml")
    assert point.fusion == params and point.projector == "mlp2x_gelu"
    yaml_shapes = [(expert_grid(cfg), out_width(cfg)) for _, cfg in point.ordered_experts()]
    assert yaml_shapes == [((27, 27), 1152), ((37, 37), 1024), ((32, 32), 1536)]
    assert _paper_scale(params, yaml_shapes) == (68_899_840, 68_899_840)

    assert _paper_scale(params, CAMBRIAN_1) == (82_191_360, 82_191_360)
    with torch.device("meta"):
        ref = CambrianConnector([c for _, c in CAMBRIAN_1], [g[0] * g[1] for g, _ in CAMBRIAN_1], 576,
                                1024, 4096, 3)
    assert _count(ref) == 82_191_360
