"""`cross_attention` and `merge_grid: largest` against Mini-Gemini's official code.

Reference: dvlab-research/MGM, commit 769820cb71afc7c2b9a2166ca3ce92db1636215c:
- mgm/model/mgm_arch.py: `initialize_uni_modules` (`vlm_uni_query_projector`,
  `vlm_uni_aux_projector`, `vlm_uni_val_projector`: LayerNorm + Linear to `mm_hidden_size`),
  `unified_resampler` (the window attention) and `encode_images` (`image_features +
  image_aux_features`, then `mm_projector`), with `image_grid` 1 (the 336/768 recipe);
- mgm/model/multimodal_projector/builder.py: `mlp2x_gelu` = Linear, GELU, Linear;
- mgm/model/multimodal_encoder/openclip_encoder.py `OpenCLIPVisionTower.backbone`: stages 1-3
  resized to stage 0's size (`F.interpolate(..float(), mode='bilinear', align_corners=False)`,
  back to their dtype) and concatenated on channels.
The reference forwards below are written from those functions; ours runs on the same weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from search_space import load_point
from search_space.cost import expert_grid, point_cost
from search_space.fusions import CrossAttention
from search_space.point import ExpertConfig
from search_space.resources.blocks import Flow
from search_space.resources.connector import ExpertShape, connector_cost, window_side
from trials.vlm.experts import ExpertTokens
from trials.vlm.fusion import build_fusion
from trials.vlm.fusion.attention import window_side as module_window_side
from trials.vlm.reduce import MERGE_MODULES, Features, pool_layers

ROOT = Path(__file__).resolve().parents[3]
MGM_YAML = ROOT / "examples" / "papers" / "mini-gemini.yaml"


class MGMConnector(nn.Module):
    """MGM's connector as mgm_arch.py builds and runs it (image_grid 1, no global image)."""

    def __init__(self, mm_hidden_size: int, mm_hidden_size_aux: int, hidden_size: int) -> None:
        super().__init__()
        c, aux = mm_hidden_size, mm_hidden_size_aux
        self.vlm_uni_query_projector = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, c))
        self.vlm_uni_aux_projector = nn.Sequential(nn.LayerNorm(aux), nn.Linear(aux, c))
        self.vlm_uni_val_projector = nn.Sequential(nn.LayerNorm(aux), nn.Linear(aux, c))
        self.mm_projector = nn.Sequential(nn.Linear(c, hidden_size), nn.GELU(),
                                          nn.Linear(hidden_size, hidden_size))

    def unified_resampler(self, images: Tensor, images_aux: Tensor) -> tuple[Tensor, Tensor]:
        # patchwise with square images
        patch_num = int(images.shape[1]**0.5)
        patch_size = images_aux.shape[-1]//patch_num
        # within patch attention
        images_aux = images_aux.permute(0,2,3,1)
        images_aux = images_aux.reshape(len(images_aux), patch_num, patch_size, patch_num, patch_size,
                                        images_aux.shape[-1])
        images_aux = images_aux.permute(0,1,3,2,4,5)
        images_aux = images_aux.reshape(len(images_aux), patch_num**2, patch_size**2,
                                        images_aux.shape[-1]).contiguous()

        # token attention
        embed_query = self.vlm_uni_query_projector(images)
        embed_aux = self.vlm_uni_aux_projector(images_aux)
        embed_value = self.vlm_uni_val_projector(images_aux)
        embed_att = embed_query[:,:,None] @ (embed_aux.transpose(-1,-2) / (embed_aux.shape[-1]**0.5))
        embed_att = embed_att.nan_to_num()
        embed_feat = (embed_att.softmax(-1) @ embed_value).mean(2)

        return images, embed_feat

    def forward(self, images: Tensor, images_aux: Tensor) -> Tensor:
        """images (B, N, C) CLIP tokens; images_aux (B, C_aux, H, W) the high-resolution map."""
        image_features, image_aux_features = self.unified_resampler(images, images_aux)
        image_features = image_features + image_aux_features
        return self.mm_projector(image_features)


def mgm_backbone_concat(results: dict[str, Tensor]) -> Tensor:
    """`OpenCLIPVisionTower.backbone` after `basic_forward`: each stage (B, C_i, H_i, W_i)."""
    target_size = (results['stage_0'].shape[-2], results['stage_0'].shape[-1])
    result_cat = []
    for _stage in results:
        if _stage == 'stage_0':
            result_cat.append(results[_stage].contiguous())
        else:
            result_cat.append(F.interpolate(results[_stage].float().contiguous() ,
                                            size=target_size,
                                            mode='bilinear',
                                            align_corners=False).to(dtype=results[_stage].dtype))
    result_cat = torch.cat(result_cat, dim=1)
    return result_cat.contiguous()


def to_tokens(fmap: Tensor) -> Features:
    """(B, C, H, W) -> our row-major tokens (B, H*W, C) on (H, W)."""
    return Features(fmap.flatten(2).transpose(1, 2), (fmap.shape[-2], fmap.shape[-1]))


def to_map(feats: Features) -> Tensor:
    return feats.tokens.transpose(1, 2).unflatten(2, feats.grid)  # (B, C, H, W)


def shared_weights(c: int, aux: int, d: int) -> tuple[MGMConnector, nn.Module]:
    """MGM's connector with random weights (LayerNorms too) and ours holding the same ones."""
    torch.manual_seed(0)
    reference = MGMConnector(c, aux, d)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(std=0.3)
    ours = build_fusion(CrossAttention(heads=1), [c, aux], d, "mlp2x_gelu")
    for mine, theirs in [(ours.query, reference.vlm_uni_query_projector),
                         (ours.keys[0], reference.vlm_uni_aux_projector),
                         (ours.values[0], reference.vlm_uni_val_projector),
                         (ours.proj, reference.mm_projector)]:
        mine.load_state_dict(theirs.state_dict(), strict=True)  # the same layout, key for key
    return reference, ours


STAGES = [(16, 24), (32, 12), (64, 6), (128, 3)]  # tiny-convnext's four stages at 96 px: (C_i, side)


@pytest.mark.parametrize("m", [1, 2, 4, 8])
def test_equals_mgm_unified_resampler_and_projector(m: int) -> None:
    """M x M windows: a 3x3 primary against a (3M)x(3M) map; fp32 outputs equal within 1e-5."""
    c, aux, d, side = 32, 48, 64, 3
    reference, ours = shared_weights(c, aux, d)
    g = torch.Generator().manual_seed(m)
    images = torch.randn(2, side * side, c, generator=g)                 # (B, N, C)
    images_aux = torch.randn(2, aux, side * m, side * m, generator=g)    # (B, C_aux, H, W)
    assert module_window_side((side * m, side * m), (side, side)) == m
    out = ours([Features(images, (side, side)), to_tokens(images_aux)])
    assert out.grids == [(side, side)]
    torch.testing.assert_close(out.tokens, reference(images, images_aux), rtol=0, atol=1e-5)


def test_no_output_projection_and_mgms_parameters() -> None:
    reference, ours = shared_weights(32, 48, 64)
    assert not hasattr(ours, "attn") and not any("out" in name for name, _ in ours.named_parameters())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stage_merge_equals_mgms_interpolate_and_concat(dtype: torch.dtype) -> None:
    """Four stages (24/12/6/3) on random tensors: our pool_layers + concat(largest) = MGM's."""
    g = torch.Generator().manual_seed(0)
    stages = {f"stage_{i}": torch.randn(2, ch, s, s, generator=g).to(dtype)
              for i, (ch, s) in enumerate(STAGES)}
    cached = pool_layers([to_tokens(x) for x in stages.values()], None, "largest")
    assert [f.grid for f in cached] == [(s, s) for _, s in STAGES]  # the cache keeps native maps
    merged = MERGE_MODULES.get("concat")([ch for ch, _ in STAGES], "largest")(cached)
    assert merged.grid == (24, 24) and merged.tokens.dtype == dtype
    assert torch.equal(to_map(merged), mgm_backbone_concat(stages))
    smallest = MERGE_MODULES.get("concat")([ch for ch, _ in STAGES])(pool_layers(
        [to_tokens(x) for x in stages.values()], None))
    assert smallest.grid == (3, 3)  # the default rule: every stage pooled to the smallest


def test_mgm_end_to_end_stages_windows_and_projector() -> None:
    """MGM's aux map (its stage merge) mined by a 3x3 primary, M = 8: ours equals MGM's chain."""
    reference, ours = shared_weights(32, sum(ch for ch, _ in STAGES), 64)
    g = torch.Generator().manual_seed(1)
    stages = {f"stage_{i}": torch.randn(2, ch, s, s, generator=g) for i, (ch, s) in enumerate(STAGES)}
    images = torch.randn(2, 9, 32, generator=g)
    merge = MERGE_MODULES.get("concat")([ch for ch, _ in STAGES], "largest")
    hr = merge(pool_layers([to_tokens(x) for x in stages.values()], None, "largest"))
    out = ours([Features(images, (3, 3)), hr])
    expected = reference(images, mgm_backbone_concat(stages))
    torch.testing.assert_close(out.tokens, expected, rtol=0, atol=1e-5)


def test_a_multi_stage_expert_reaches_the_fusion_at_its_largest_grid(images: Tensor) -> None:
    """tiny-convnext's four stages with merge_grid largest: 24x24 x 240 (the cost model's grid),
    so a 3x3 primary gets 8x8 windows, as Mini-Gemini's 24x24 CLIP grid on its 192x192 map."""
    cfg = ExpertConfig(source="tiny-convnext", layers=(1, 2, 3, 4), merge="concat", merge_grid="largest")
    tokens = ExpertTokens(cfg, random_weights=True)
    cached = tokens.features(images)
    assert [f.grid for f in cached] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    out = tokens.merge(cached)
    assert out.grid == expert_grid(cfg) == (24, 24) and out.tokens.shape == (2, 576, 240)
    assert window_side(out.grid, (3, 3)) == module_window_side(out.grid, (3, 3)) == 8
    pooled = ExpertTokens(cfg.model_copy(update={"merge_grid": "smallest"}), tokens.expert)(images)
    assert pooled.grid == (3, 3)
    fused = build_fusion(CrossAttention(), [64, 240], 16, "linear")(
        [Features(torch.randn(2, 9, 64), (3, 3)), out])
    assert fused.grids == [(3, 3)]


def test_mini_gemini_windows_are_8_with_the_largest_grid_and_1_without() -> None:
    point, _ = load_point(MGM_YAML)
    clip, convnext = (cfg for _, cfg in point.ordered_experts())
    assert convnext.merge_grid == "largest" and convnext.layer_list == (1, 2, 3, 4)
    assert expert_grid(clip) == (24, 24) and expert_grid(convnext) == (192, 192)
    assert window_side(expert_grid(convnext), expert_grid(clip)) == 8
    assert point_cost(point).visual_tokens == 576
    old_rule = convnext.model_copy(update={"merge_grid": "smallest"})
    assert expert_grid(old_rule) == (24, 24) and window_side((24, 24), (24, 24)) == 1


# Mini-Gemini-7B (CLIP-L/336 1024 wide, ConvNeXt-L 4 stages 2880 wide, Vicuna-7B 4096):
#   query LN(1024) + Linear(1024 -> 1024)             1,051,648
#   aux   LN(2880) + Linear(2880 -> 1024)             2,955,904
#   val   LN(2880) + Linear(2880 -> 1024)             2,955,904
#   mm_projector Linear(1024 -> 4096), GELU, Linear  20,979,712
#   connector                                        27,943,168 (6,963,456 before the projector)
MGM_CONNECTOR = 27_943_168


def test_mini_gemini_connector_parameters_cost_model_module_and_mgm() -> None:
    """At Mini-Gemini-7B's configuration: the cost model, our module on the meta device and
    MGM's own modules all count 27,943,168 parameters (6,963,456 for patch info mining)."""
    shapes = [ExpertShape((24, 24), 1024), ExpertShape((192, 192), 192 + 384 + 768 + 1536)]
    est = connector_cost(CrossAttention(), shapes, 4096, "mlp2x_gelu", Flow(True))
    with torch.device("meta"):
        ours = build_fusion(CrossAttention(), [1024, 2880], 4096, "mlp2x_gelu")
        reference = MGMConnector(1024, 2880, 4096)
    count = sum(p.numel() for p in ours.parameters())
    assert est.params == count == sum(p.numel() for p in reference.parameters()) == MGM_CONNECTOR
    assert count - sum(p.numel() for p in ours.proj.parameters()) == 6_963_456


def test_heads_are_multi_head_attention_without_an_output_projection() -> None:
    """heads: 3 (our generalisation; MGM has one): Q, K, V split in 3 heads of C/3 channels, each
    softmax(q k^T / sqrt(C/3)) v, the heads concatenated back to C, `X + A V`, the projector."""
    c, heads, side, m = 12, 3, 2, 2
    ours = build_fusion(CrossAttention(heads=heads), [c, 8], 16, "linear")
    g = torch.Generator().manual_seed(0)
    x = Features(torch.randn(2, side * side, c, generator=g), (side, side))
    hr = Features(torch.randn(2, (side * m) ** 2, 8, generator=g), (side * m, side * m))
    windows = hr.tokens.unflatten(1, (side, m, side, m)).permute(0, 1, 3, 2, 4, 5).flatten(3, 4)
    windows = windows.flatten(1, 2)                                            # (B, N, M*M, C_aux)
    q = ours.query(x.tokens).unflatten(-1, (heads, 1, -1))                     # (B, N, H, 1, C/H)
    k, v = (p[0](windows).unflatten(-1, (heads, -1)).transpose(2, 3) for p in (ours.keys, ours.values))
    mined = F.scaled_dot_product_attention(q, k, v).flatten(2)                 # (B, N, C)
    expected = ours.proj(x.tokens + mined)
    torch.testing.assert_close(ours([x, hr]).tokens, expected, rtol=0, atol=1e-5)


def test_uneven_heads_and_too_many_heads() -> None:
    """5 heads of 12 channels: heads of 3, 3, 2, 2, 2; 13 heads are refused, naming the fix."""
    ours = build_fusion(CrossAttention(heads=5), [12, 8], 16, "linear")
    out = ours([Features(torch.randn(1, 4, 12), (2, 2)), Features(torch.randn(1, 16, 8), (4, 4))])
    assert out.tokens.shape == (1, 4, 16) and torch.isfinite(out.tokens).all()
    with pytest.raises(ValueError, match=r"heads 13 exceed the primary expert's width 12 .*use at most 12"):
        build_fusion(CrossAttention(heads=13), [12, 8], 16, "linear")
