"""The assembled VLM: built from a point alone, equal to the cost model, right gradients."""

from __future__ import annotations

import pytest
import torch

from search_space import TrialConfig, point_cost
from search_space.components import POSITIONS, PROJECTORS
from search_space.fusions import FUSIONS
from search_space.presets import FAMILIES
from trials.vlm.experts import ADAPTERS
from trials.vlm.fusion import FUSION_MODULES
from trials.vlm.model import IGNORE, build_vlm
from trials.vlm.projectors import PROJECTOR_MODULES
from trials.vlm.reduce import MERGE_MODULES

# different grids and widths: clip 4x4 x64, dinov2 8x8 x48, convnext stage 2 12x12 x32
EXPERTS = [("clip", {"source": "tiny-clip", "tokens": 16}),
           ("dinov2", {"source": "tiny-dinov2"}),
           ("convnext", {"source": "tiny-convnext", "layers": 2})]
FUSION_PARAMS = {"channel_concat": {}, "sequence_concat": {}, "gated_injection": {}, "mr_adapter": {},
                 "cross_attention": {"heads": 2}, "resampler": {"queries": 4}, "sva": {"queries": 4}}
QUESTIONS = ["what color is the object ?", "how many objects are there ?"]
ANSWERS = ["red", "3"]


def point(kind: str, n: int, positions: str = "original", train: str = "full",
          projector: str = "mlp2x_gelu") -> TrialConfig:
    return TrialConfig.model_validate({
        "name": "t", "data": {"image_size": 64},
        "experts": dict(EXPERTS[:n]), "fusion": {"kind": kind, **FUSION_PARAMS[kind]},
        "positions": positions, "projector": projector,
        "language_model": {"train": train, "lora_rank": 4}})


def cases() -> list[tuple[str, int]]:
    return [(kind, n) for kind in FUSIONS.names() for n in (1, 2, 3)
            if n >= FUSIONS.get(kind).min_experts]


def test_registries_match_the_schema() -> None:
    assert set(FUSION_MODULES.names()) == set(FUSIONS.names())
    assert set(PROJECTOR_MODULES.names()) == set(PROJECTORS.names())
    assert set(ADAPTERS.names()) == set(FAMILIES.names())
    assert set(FUSION_PARAMS) == set(FUSIONS.names())
    assert set(MERGE_MODULES.names()) == {"concat", "mean", "layerscale"}


@pytest.mark.parametrize(("kind", "n"), cases())
def test_model_equals_cost_model_for_every_scheme(kind: str, n: int, images: torch.Tensor) -> None:
    torch.manual_seed(0)
    vlm = build_vlm(point(kind, n))
    visual = vlm.visual(images)
    for scheme in POSITIONS.names():
        cost = point_cost(point(kind, n, scheme))
        assert visual.grids == list(cost.groups)
        assert visual.tokens.shape == (2, cost.visual_tokens, vlm.d_model)
        vlm.point = point(kind, n, scheme)
        assert vlm.visual_cost() == (cost.visual_tokens, cost.positions_used)
        batch = vlm.encode(QUESTIONS, ANSWERS)
        spliced = vlm._splice(batch["input_ids"], batch["attention_mask"], batch["labels"], visual)
        assert spliced["inputs_embeds"].shape[1] == batch["input_ids"].shape[1] - 1 + cost.visual_tokens
        # the image sits at index 1 (after <s>): the first text token after it is at 1 + used
        assert int(spliced["position_ids"][0, 1 + cost.visual_tokens]) == 1 + cost.positions_used
        loss = vlm(**batch, images=images)
        assert torch.isfinite(loss)


def test_splice_places_visual_tokens_and_masks_labels(images: torch.Tensor) -> None:
    vlm = build_vlm(point("sequence_concat", 2, "share_by_row"))
    batch = vlm.encode(QUESTIONS, ANSWERS)
    visual = vlm.visual(images)
    out = vlm._splice(batch["input_ids"], batch["attention_mask"], batch["labels"], visual)
    n = visual.tokens.shape[1]  # 16 + 64
    assert torch.equal(out["inputs_embeds"][:, 1:1 + n], visual.tokens)
    text = vlm.lm.get_input_embeddings()(batch["input_ids"])
    assert torch.equal(out["inputs_embeds"][:, 0], text[:, 0])
    assert torch.equal(out["inputs_embeds"][:, 1 + n:], text[:, 2:])
    assert bool((out["labels"][:, :1 + n] == IGNORE).all())
    assert torch.equal(out["labels"][:, 1 + n:], batch["labels"][:, 2:])
    # share_by_row: clip 4 rows, dinov2 8 rows -> the visual ids are 1..12, text resumes at 13
    assert out["position_ids"][0, 1:1 + n].unique().tolist() == list(range(1, 13))
    assert int(out["position_ids"][0, 1 + n]) == 13


def test_labels_cover_answer_tokens_only() -> None:
    vlm = build_vlm(point("channel_concat", 1))
    batch = vlm.encode(QUESTIONS, ANSWERS)
    tok = vlm.tokenizer
    for row, labels, answer in zip(batch["input_ids"], batch["labels"], ANSWERS, strict=True):
        kept = labels[labels != IGNORE].tolist()
        assert tok.convert_ids_to_tokens(kept) == [answer, tok.eos_token]
        assert int((row == vlm.image_token_id).sum()) == 1


@pytest.mark.parametrize("train", ["frozen", "lora", "full"])
def test_gradients_reach_fusion_projector_and_lm_per_train_mode(train: str, images: torch.Tensor) -> None:
    vlm = build_vlm(point("sequence_concat", 2, train=train))
    vlm(**vlm.encode(QUESTIONS, ANSWERS), images=images).backward()
    for name, param in vlm.named_parameters():
        if name.startswith("experts.") and ".expert." in name:
            assert not param.requires_grad and param.grad is None, name
        elif param.requires_grad:
            assert param.grad is not None, name
            if "lora_A" not in name:  # LoRA's B starts at zero, so A's first gradient is zero
                assert param.grad.abs().sum() > 0, name
    lm_trainable = [n for n, p in vlm.lm.named_parameters() if p.requires_grad]
    assert bool(lm_trainable) == (train != "frozen")
    if train == "lora":
        assert all("lora_" in n for n in lm_trainable)
    assert all(p.requires_grad for p in vlm.fusion.parameters())
    trainable, total = vlm.parameter_counts()
    assert 0 < trainable < total


def test_deterministic_under_a_seed(images: torch.Tensor) -> None:
    losses = []
    for _ in range(2):
        torch.manual_seed(3)
        vlm = build_vlm(point("sva", 2))
        losses.append(vlm(**vlm.encode(QUESTIONS, ANSWERS), images=images))
    assert torch.equal(losses[0], losses[1])


def test_cached_features_give_the_same_loss(images: torch.Tensor) -> None:
    vlm = build_vlm(point("cross_attention", 2))
    batch = vlm.encode(QUESTIONS, ANSWERS)
    features = vlm.expert_features(images)
    assert torch.equal(vlm(**batch, images=images), vlm(**batch, features=features))


def test_one_token_scores_equal_sequence_scores(images: torch.Tensor) -> None:
    vlm = build_vlm(point("channel_concat", 2))
    fast = vlm.score(QUESTIONS, ["red", "blue", "3"], images=images)
    slow = vlm._score_sequences(QUESTIONS, ["red", "blue", "3"], vlm.visual(images))
    assert torch.allclose(fast, slow, atol=1e-5)
    mixed = vlm.score(QUESTIONS, ["red", "red blue"], images=images)  # two tokens: sequence path
    assert torch.allclose(mixed[:, 0], fast[:, 0], atol=1e-5) and bool((mixed[:, 1] < mixed[:, 0]).all())


def test_answering(images: torch.Tensor) -> None:
    vlm = build_vlm(point("resampler", 2))
    scores = vlm.score(QUESTIONS, ["red", "blue", "3"], images=images)
    assert scores.shape == (2, 3) and bool((scores < 0).all())
    assert vlm.answer(QUESTIONS, ["red", "blue", "3"], images=images) == [
        ["red", "blue", "3"][int(i)] for i in scores.argmax(dim=1)]
    assert all(isinstance(a, str) for a in vlm.generate(QUESTIONS, images=images, max_new_tokens=2))


def test_missing_placeholder_is_refused(images: torch.Tensor) -> None:
    vlm = build_vlm(point("channel_concat", 1))
    batch = vlm.encode(QUESTIONS, ANSWERS)
    batch["input_ids"][0, 1] = vlm.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="exactly one <image>"):
        vlm(**batch, images=images)


def test_a_projector_per_expert_builds_each_and_the_resource_model_counts_them(
        images: torch.Tensor) -> None:
    """COMM's alignment: DINOv2 through a 2-layer MLP, CLIP through a linear layer."""
    from search_space.resources.analytic import assess
    from search_space.space import Resources

    p = TrialConfig.model_validate({**point("sequence_concat", 2).model_dump(),
                                    "projector": {"clip": "linear", "dinov2": "mlp2x_gelu"}})
    torch.manual_seed(0)
    vlm = build_vlm(p)
    clip, dinov2 = vlm.fusion.projs
    assert isinstance(clip, torch.nn.Linear)
    assert [type(m).__name__ for m in dinov2] == ["Linear", "GELU", "Linear"]
    assert vlm.visual(images).tokens.shape[1] == point_cost(p).visual_tokens
    metrics, _ = assess(p, Resources())
    assert metrics["trainable_params"] == vlm.parameter_counts()[0]
    assert metrics["total_params"] == vlm.parameter_counts()[1]
