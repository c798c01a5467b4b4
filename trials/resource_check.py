"""The resource model of a design against the VLM itself: parameters counted on the built
model, FLOPs of one training step counted by FlopCounterMode (on the meta device, so paper-scale
designs cost nothing), and the bytes autograd saves per sample (on real CPU tensors).

Used by `bench/resource_model.py` and its test. The step is the one `trials.loop` runs on one
sample of `text_tokens` text tokens (its `<image>` replaced by the visual tokens): frozen experts'
features given as cached, a training expert run from its image, every part of the first stage
training; rows are unpadded, so the LM gets no attention mask (as one unpadded sequence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from search_space import StagePlan, TrialConfig, estimate
from trials.measure import count_flops, per_sample_saved_bytes
from trials.vlm.lm import IMAGE_TOKEN
from trials.vlm.model import IGNORE, VLM, build_vlm

ANSWER_TOKENS = 4

# Small designs of every family and operator, run on real CPU tensors (bench/resource_model.py
# and its test): each stage-1 step measured against the resource model.
SMALL: dict[str, dict[str, Any]] = {
    "sequence-full-lm": {"experts": {"clip": {"source": "tiny-clip", "tokens": 16},
                                     "dinov2": {"source": "tiny-dinov2"}},
                         "fusion": {"kind": "sequence_concat", "expert_embedding": True}},
    "resampler-lora-lm": {"experts": {"clip": {"source": "tiny-clip"}, "sam": {"source": "tiny-sam"}},
                          "fusion": {"kind": "resampler", "queries": 16, "depth": 2},
                          "language_model": {"source": "tiny-llama", "train": "lora"}},
    "cross-attention-frozen-lm": {"experts": {"clip": {"source": "tiny-clip", "tokens": 16},
                                              "convnext": {"source": "tiny-convnext", "layers": 1}},
                                  "fusion": {"kind": "cross_attention", "heads": 2},
                                  "language_model": {"source": "tiny-llama", "train": "frozen"}},
    "cross-attention-stages-largest": {  # Mini-Gemini's shape: four ConvNeXt stages at 24x24, M = 8
        "experts": {"clip": {"source": "tiny-clip", "tokens": 9},
                    "convnext": {"source": "tiny-convnext", "layers": [1, 2, 3, 4], "merge": "concat",
                                 "merge_grid": "largest"}},
        "fusion": {"kind": "cross_attention"}, "language_model": {"source": "tiny-llama", "train": "frozen"}},
    "sva-layerscale": {"experts": {"clip": {"source": "tiny-clip", "layers": [-1, -2, -3]},
                                   "dinov2": {"source": "tiny-dinov2"}},
                       "fusion": {"kind": "sva", "queries": 16, "depth": 2}},
    "mr-adapter-inside": {"experts": {"clip": {"source": "tiny-clip", "tokens": 16},
                                      "convnext": {"source": "tiny-convnext", "layers": 2}},
                          "fusion": {"kind": "mr_adapter"}},
    "gated-injection-expert-trains": {
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16, "train": "full"},
                    "sam": {"source": "tiny-sam"}},
        "fusion": {"kind": "gated_injection"}},
    "first-stage-holds-lora-lm-and-expert": {
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16, "train": "lora"},
                    "dinov2": {"source": "tiny-dinov2"}},
        "fusion": {"kind": "sequence_concat"},
        "language_model": {"source": "tiny-llama", "train": "lora"},
        "train": {"batch_size": 4, "stages": [{"train": ["connector"], "steps": 2, "lr": 1e-3},
                                              {"train": ["connector", "lm", "experts"], "steps": 2,
                                               "lr": 1e-4}]}},
    "leo-unshuffle-interleave": {  # LEO's geometry: SAM's neck and a ViT, each unshuffled
        "experts": {"clip": {"source": "tiny-clip", "tokens": 36, "reduce": "unshuffle"},
                    "sam": {"source": "tiny-sam", "layers": "neck", "tokens": 16, "reduce": "resize"}},
        "fusion": {"kind": "sequence_concat"}, "projector": "ln_mlp2x_gelu"},
    "cross-attention-full-res-neck-trains": {  # secondary at full resolution; its neck in backward
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16, "reduce": "resize"},
                    "sam": {"source": "tiny-sam", "layers": ["neck", -1], "merge": "concat",
                            "train": "full"}},
        "fusion": {"kind": "cross_attention"}},
    "tiles-dynamic-interleave": {  # LEO's tiling: 2 x 2 tiles of 48 px + a thumbnail, per tile fused
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16,
                             "tiling": {"max_tiles": 4, "tile_size": 48}},
                    "dinov2": {"source": "tiny-dinov2", "tokens": 16,
                               "tiling": {"max_tiles": 4, "tile_size": 48}}},
        "fusion": {"kind": "sequence_concat", "interleave": True}},
    "tiles-anyres-newline": {  # LLaVA-NeXT: the base, the merged 2 x 2 tiles, image_newline
        "experts": {"clip": {"source": "tiny-clip", "tokens": 16,
                             "tiling": {"scheme": "anyres", "max_tiles": 4, "tile_size": 48,
                                        "newline": True}}},
        "fusion": {"kind": "sequence_concat"}},
    "channel-concat-lora-expert": {"experts": {"dinov2": {"source": "tiny-dinov2", "train": "lora"},
                                               "mae": {"source": "tiny-mae", "tokens": 64}},
                                   "fusion": {"kind": "channel_concat"}, "projector": "linear"},
}


@dataclass(frozen=True)
class Measured:
    trainable: int
    total: int
    forward: int         # FLOPs per sample
    backward: int
    saved: float | None  # bytes per sample (CPU runs only)


def _batch(vlm: VLM, text_tokens: int, batch: int, device: str) -> dict[str, Tensor]:
    """`batch` equal rows: <s> <image> words..., the last ANSWER_TOKENS labelled."""
    tok = vlm.tokenizer
    word = tok.convert_tokens_to_ids("what") if "what" in tok.get_vocab() else tok.eos_token_id
    row = [tok.bos_token_id, tok.convert_tokens_to_ids(IMAGE_TOKEN)] + [word] * (text_tokens - 2)
    ids = torch.tensor([row] * batch, device=device)
    labels = torch.full_like(ids, IGNORE)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _step(vlm: VLM, text_tokens: int, batch: int, device: str, backward: bool = True
          ) -> Callable[[], None]:
    """One batch's training loss as the loop computes it (and its backward), as a callable;
    the frozen experts' features are computed beforehand, as the cache would give them."""
    images = torch.zeros(batch, 3, vlm.point.data.image_size, vlm.point.data.image_size,
                         dtype=torch.uint8, device=device)
    frozen = [n for n in vlm.expert_names if n not in vlm.live]
    features = vlm.expert_features(images, frozen) if frozen else {}
    inputs = _batch(vlm, text_tokens, batch, device)

    def run() -> None:  # the graph is built either way: the forward's FLOPs are the same
        spliced = vlm._splice(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                              vlm.visual(images if vlm.live else None, features))
        spliced.pop("attention_mask")  # unpadded rows: the LM's own causal mask
        loss = vlm.lm(**spliced).loss
        if backward:
            loss.backward()

    return run


def _built(point: TrialConfig, device: str) -> VLM:
    with torch.device(device):
        torch.manual_seed(0)
        vlm = build_vlm(point, random_weights=True)
    vlm.train_only(point.train.stage_list()[0].train)
    return vlm.train()


def measure(point: TrialConfig, text_tokens: int, on_cpu: bool = False, split: bool = True
            ) -> Measured:
    """Parameters and step FLOPs on the meta device (`split`: forward and backward apart, else
    all in `backward`); with `on_cpu` (small designs only), the bytes saved per sample on real
    tensors too."""
    vlm = _built(point, "meta")
    trainable = sum(p.numel() for p in vlm.parameters() if p.requires_grad)
    total = sum(p.numel() for p in vlm.parameters())
    forward = count_flops(_step(vlm, text_tokens, 1, "meta", backward=False)) if split else 0
    both = count_flops(_step(vlm, text_tokens, 1, "meta"))
    saved = None
    if on_cpu:
        cpu = _built(point, "cpu")
        saved = per_sample_saved_bytes(lambda b: _step(cpu, text_tokens, b, "cpu")(),
                                       exclude=list(cpu.parameters()))
    return Measured(trainable, total, forward, both - forward, saved)


@dataclass(frozen=True)
class Predicted:
    trainable: int
    total: int
    forward: int
    backward: int
    saved: int


def predict(point: TrialConfig, text_tokens: int, profile: str = "cpu") -> Predicted:
    """The resource model's numbers for the same step (attention counted as the meta device's
    math kernel runs it: no recomputed scores)."""
    e = estimate(point, profile, text_tokens=text_tokens, recompute=False)
    plan: StagePlan = e.stages[0]
    return Predicted(sum(p.trainable for p in plan.parts), sum(p.params for p in plan.parts),
                     sum(p.forward for p in plan.parts), sum(p.backward for p in plan.parts),
                     plan.per_sample_bytes())
