"""The VLM under test, built from a design point alone: `build_vlm(point)`.

experts (frozen) -> token reduction -> layer merge -> fusion (+ projector) -> position ids -> LM.
An injection fusion reads its experts at full resolution and the primary's reduction applies to
its fused group (`search_space.cost.fusion_plan`, which the cost model reads too).
Visual embeddings replace the `<image>` placeholder in `inputs_embeds`; the loss covers answer
tokens only. Nothing loops over tokens in Python; on CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from search_space import TrialConfig, UnknownGeometry, expert_grid, fusion_plan
from trials.vlm.chat import IGNORE, ChatFormat, Encoded
from trials.vlm.experts import ExpertTokens
from trials.vlm.fusion import FUSION_MODULES, VisualTokens, build_fusion
from trials.vlm.lm import IMAGE_TOKEN, load_lm
from trials.vlm.positions import group_offsets, splice_positions
from trials.vlm.reduce import Features, reduce_features
from trials.vlm.tiling import TileMerge

LayerFeatures = Mapping[str, Sequence[Features]]  # expert name -> its selected layers


class VLM(nn.Module):
    """A multi-expert VLM; experts run in the order of `point.ordered_experts()`."""

    def __init__(self, point: TrialConfig, random_weights: bool = False) -> None:
        super().__init__()
        self.point = point
        self.plan = fusion_plan(point)  # the experts as the fusion reads them, and `after`
        self.expert_names = [name for name, _ in self.plan.experts]
        self.experts = nn.ModuleDict({n: ExpertTokens(cfg, random_weights=random_weights,
                                                      tiling=self.plan.tiling)
                                      for n, cfg in self.plan.experts})
        self.lm, self.tokenizer = load_lm(point.language_model, random_weights)
        self.d_model = int(self.lm.config.hidden_size)
        # tiled: the fusion runs on each tile; this gives the LM its groups (anyres: the newline)
        self.tiles = TileMerge(self.plan.tiling, self.d_model) if self.plan.tiling else None
        widths = [self.experts[n].out_width for n in self.expert_names]
        primary = self.experts[self.expert_names[0]].expert
        self.fusion = build_fusion(point.fusion, widths, self.d_model, point.fusion_projector(),
                                   grids=self._expert_grids(), primary_depth=primary.info.num_layers)
        self.image_token_id = int(self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
        self.chat = ChatFormat(self.tokenizer, point.language_model.system_prompt)
        # run from images every step: experts that train, and a primary the fusion runs inside
        self.inside = self.expert_names[:1] if self.fusion.live_primary else []
        self.live = [n for n in self.expert_names if self.experts[n].expert.trains or n in self.inside]
        self.trainable_parts = self._parts()
        self.precision: str | None = None  # None: bf16 autocast on CUDA only (`use_precision`)

    def _expert_grids(self) -> list[tuple[int, int]] | None:
        """The experts' grids entering the fusion, for an operator built for them (sva's
        per-window weights): the cost model's, else (geometry known once loaded) a probe image."""
        if not FUSION_MODULES.get(self.point.fusion.kind).needs_grids:
            return None
        try:
            return [expert_grid(cfg) for _, cfg in self.plan.experts]
        except UnknownGeometry:
            size = self.point.data.image_size
            images = torch.zeros(1, 3, size, size, dtype=torch.uint8)
            with torch.no_grad():
                return [self.experts[n](images).grid for n in self.expert_names]

    # ---- what trains -----------------------------------------------------------------------

    def _parts(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each part may train (its mode allows): experts, connector, lm."""
        experts = [p for n in self.live for p in self.experts[n].expert.parameters() if p.requires_grad]
        merges = [p for n in self.expert_names for p in self.experts[n].merge.parameters()]
        merges += list(self.tiles.parameters()) if self.tiles is not None else []
        lm = [p for p in self.lm.parameters() if p.requires_grad]
        return {"experts": experts, "connector": merges + list(self.fusion.parameters()), "lm": lm}

    def train_only(self, parts: Sequence[str]) -> None:
        """Let the named parts train (as their modes allow) and hold every other parameter."""
        for part, params in self.trainable_parts.items():
            for param in params:
                param.requires_grad_(part in parts)

    def use_precision(self, precision: str) -> None:
        """bf16: parameters that can never train are stored in bf16 and the forward runs under
        bf16 autocast (trainable ones stay fp32); fp32: everything fp32, no autocast."""
        self.precision = precision
        if precision == "bf16":
            trainable = {id(p) for params in self.trainable_parts.values() for p in params}
            for param in self.parameters():
                if id(param) not in trainable:
                    param.data = param.data.to(torch.bfloat16)

    def enable_checkpointing(self) -> None:
        """HF gradient checkpointing for the LM's layers, and for the connector's blocks."""
        base = self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x; older: the old name
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.config.use_cache = False
        self.fusion.checkpointing = True

    def pad_colour(self) -> tuple[int, int, int]:
        """LLaVA's expand2square colour: the first expert's mean, in 0-255."""
        mean = self.experts[self.expert_names[0]].expert.mean.flatten().tolist()
        return (int(mean[0] * 255), int(mean[1] * 255), int(mean[2] * 255))

    # ---- vision side ----------------------------------------------------------------------

    @torch.no_grad()
    def expert_features(self, images: Tensor, names: Sequence[str] | None = None
                        ) -> dict[str, list[Features]]:
        """Each expert's selected layers on its final grid, for uint8 images (B, 3, H, W),
        without gradients: what the feature cache stores (for the frozen experts; by default
        every expert that does not run live)."""
        names = names or [n for n in self.expert_names if n not in self.live]
        return {name: self.experts[name].features(images) for name in names}

    def visual(self, images: Tensor | None = None, features: LayerFeatures | None = None
               ) -> VisualTokens:
        """Projected visual token groups, from cached expert features where given and from the
        images for the rest (a training expert runs here, with gradients)."""
        features = dict(features or {})
        if any(n in features for n in self.inside):
            raise ValueError(f"{self.point.fusion.kind} runs inside the primary expert "
                             f"{self.inside[0]}: pass its images, not cached features")
        missing = [n for n in self.expert_names if n not in features]
        if missing and images is None:
            raise ValueError(f"pass images (for {', '.join(missing)}) or their cached features")
        for name in missing:
            if name not in self.inside:
                features[name] = self.experts[name].features(images)
        with self._autocast():  # tiled: every step below on each tile ((B * T) images)
            reduced = {n: self.experts[n].merge(self.experts[n].untiled(list(features[n])))
                       for n in features}
            for name in self.inside:  # the fusion's adapters run between its blocks
                secondaries = [reduced[n] for n in self.expert_names[1:]]
                layers = self.fusion.primary_layers(self.experts[name], images, secondaries)
                reduced[name] = self.experts[name].merge(self.experts[name].untiled(layers))
            return self._after(self.fusion([reduced[n] for n in self.expert_names]))

    def _after(self, visual: VisualTokens) -> VisualTokens:
        """The fused groups reduced by the plan's `after` (an injection fusion's primary), then
        (tiled) the tiles' groups as the LM receives them (`search_space.tiling`)."""
        after = self.plan.after
        if after is not None:
            visual = VisualTokens(tuple(reduce_features(g, after.tokens, after.reduce)
                                        for g in visual.groups))
        return visual if self.tiles is None else VisualTokens(self.tiles(visual.groups))

    # ---- splicing -------------------------------------------------------------------------

    def _splice(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None,
                visual: VisualTokens, has_image: Tensor | None = None) -> dict[str, Tensor]:
        """Replace each row's single `<image>` by the N visual tokens; build position ids.
        `has_image` (B,) False: a text-only row, whose placeholder (after its text) is masked out."""
        is_image = input_ids == self.image_token_id  # (B, L)
        if input_ids.device.type != "meta" and not bool((is_image.sum(dim=1) == 1).all()):
            raise ValueError(f"every sequence needs exactly one {IMAGE_TOKEN} placeholder")
        b, length = input_ids.shape
        vis = visual.tokens                                     # (B, N, d)
        n = vis.shape[1]
        p = is_image.float().argmax(dim=1)                      # (B,)
        t = torch.arange(length - 1 + n, device=input_ids.device)[None, :].expand(b, -1)
        in_image = (t >= p[:, None]) & (t < p[:, None] + n)     # (B, L')
        text_at = torch.where(t < p[:, None], t, t - n + 1).clamp(0, length - 1)
        vis_at = (t - p[:, None]).clamp(0, n - 1)
        text_emb = self.lm.get_input_embeddings()(input_ids)    # (B, L, d)
        d = text_emb.shape[-1]
        embeds = torch.where(in_image[..., None],
                             vis.to(text_emb.dtype).gather(1, vis_at[..., None].expand(-1, -1, d)),
                             text_emb.gather(1, text_at[..., None].expand(-1, -1, d)))
        offsets, used = group_offsets(visual.grids, self.point.positions)
        seen = 1 if has_image is None else has_image.to(attention_mask.dtype)[:, None]  # (B, 1)
        out = {"inputs_embeds": embeds,                                              # (B, L', d)
               "attention_mask": torch.where(in_image, seen, attention_mask.gather(1, text_at)),
               "position_ids": splice_positions(p, length, offsets, used)}
        if labels is not None:
            out["labels"] = torch.where(in_image, IGNORE, labels.gather(1, text_at))
        return out

    def _autocast(self) -> AbstractContextManager[None]:
        device = next(self.fusion.parameters()).device
        bf16 = self.precision == "bf16" or (self.precision is None and device.type == "cuda")
        if device.type == "meta":  # shapes only (resource checks): autocast does not run there
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None,
                images: Tensor | None = None, features: LayerFeatures | None = None,
                num_items: int | None = None, has_image: Tensor | None = None) -> Tensor:
        """The LM's loss (answer tokens only) when `labels` are given, else the logits.
        `num_items`: divide the summed token loss by this many answer tokens instead of this
        batch's own (gradient accumulation and data parallelism: the whole batch's count).
        `has_image`: False for text-only rows (see `pad_rows`)."""
        extra = {} if num_items is None else {"num_items_in_batch": num_items}
        with self._autocast():
            batch = self._splice(input_ids, attention_mask, labels, self.visual(images, features),
                                 has_image)
            out = self.lm(**batch, **extra)
        return out.loss if labels is not None else out.logits

    # ---- prompts and answers --------------------------------------------------------------

    def encode(self, questions: Sequence[str], answers: Sequence[str] | None = None,
               device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """One human question (and its gpt answer) per row in the LM's chat format, right-padded;
        labels on the answers. Without answers: the questions followed by the generation prompt."""
        if answers is None:
            rows = [self.chat.ask(q) for q in questions]
            return self.pad_rows([Encoded(r, [IGNORE] * len(r), [False] * len(r)) for r in rows], device)
        return self.pad_rows([self.chat.encode([("human", q), ("gpt", a)])
                              for q, a in zip(questions, answers, strict=True)], device)

    def pad_rows(self, rows: Sequence[Encoded], device: torch.device | str = "cpu",
                 has_image: Sequence[bool] | None = None) -> dict[str, Tensor]:
        """Encoded conversations as one right-padded batch. A text-only row (`has_image` False)
        gets a placeholder after its text, which `_splice` masks out: every row has one."""
        ids = [list(r.input_ids) for r in rows]
        labels = [list(r.labels) for r in rows]
        flags = [True] * len(rows) if has_image is None else list(has_image)
        for row, label, flag in zip(ids, labels, flags, strict=True):
            if not flag:
                row.append(self.image_token_id)
                label.append(IGNORE)
        width = max(map(len, ids))
        pad = self.tokenizer.pad_token_id

        def padded(seqs: list[list[int]], value: int) -> Tensor:
            return torch.tensor([s + [value] * (width - len(s)) for s in seqs], device=device)

        out = {"input_ids": padded(ids, pad), "attention_mask": padded([[1] * len(r) for r in ids], 0),
               "labels": padded(labels, IGNORE)}
        if has_image is not None:
            out["has_image"] = torch.tensor(flags, device=device)
        return out

    @torch.no_grad()
    def score(self, questions: Sequence[str], candidates: Sequence[str],
              images: Tensor | None = None, features: LayerFeatures | None = None) -> Tensor:
        """Log-likelihood (B, K) of each candidate answer's tokens after its question.

        One-token candidates (a closed vocabulary of words) need a single forward; longer ones
        are scored as B*K sequences.
        """
        visual = self.visual(images, features)
        device = visual.tokens.device
        ids = [self.chat.reply_ids(questions[0], c) for c in candidates]
        if all(len(i) == 1 for i in ids):
            batch = self.encode(questions, device=device)
            with self._autocast():
                spliced = self._splice(batch["input_ids"], batch["attention_mask"], None, visual)
                logits = self.lm(**spliced).logits.float()           # (B, L', V)
            last = batch["attention_mask"].sum(dim=1) - 1 + visual.tokens.shape[1] - 1
            logp = torch.log_softmax(logits[torch.arange(len(questions)), last], dim=-1)  # (B, V)
            return logp[:, torch.tensor([i[0] for i in ids], device=device)]            # (B, K)
        return self._score_sequences(questions, candidates, visual)

    def _score_sequences(self, questions: Sequence[str], candidates: Sequence[str],
                         visual: VisualTokens) -> Tensor:
        b, k = len(questions), len(candidates)
        rows = [self.chat.encode([("human", q), ("gpt", c)]) for q in questions for c in candidates]
        replies = [Encoded(r.input_ids, [t if inside else IGNORE for t, inside
                                         in zip(r.input_ids, r.content, strict=True)], r.content)
                   for r in rows]  # the reply's own tokens, its end-of-turn marker not summed
        batch = self.pad_rows(replies, visual.tokens.device)
        expanded = VisualTokens(tuple(Features(g.tokens.repeat_interleave(k, dim=0), g.grid)
                                      for g in visual.groups))
        with self._autocast():
            spliced = self._splice(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                   expanded)
            labels = spliced.pop("labels")
            logits = self.lm(**spliced).logits.float()              # (B*K, L', V)
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        target = labels[:, 1:]
        picked = logp.gather(2, target.clamp(min=0)[..., None])[..., 0]
        return (picked * (target != IGNORE)).sum(dim=1).view(b, k)

    @torch.no_grad()
    def answer(self, questions: Sequence[str], candidates: Sequence[str],
               images: Tensor | None = None, features: LayerFeatures | None = None) -> list[str]:
        """The most likely candidate for each question (closed-vocabulary answering)."""
        best = self.score(questions, candidates, images, features).argmax(dim=1)
        return [candidates[int(i)] for i in best]

    @torch.no_grad()
    def generate(self, questions: Sequence[str], images: Tensor | None = None,
                 features: LayerFeatures | None = None, max_new_tokens: int = 8) -> list[str]:
        """Greedy open-ended answers (one full forward per new token; answers are short)."""
        visual = self.visual(images, features)
        batch = self.encode(questions, device=visual.tokens.device)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(dim=1)
        done = torch.zeros(len(questions), dtype=torch.bool, device=ids.device)
        stops = torch.tensor(sorted(self.chat.stop_ids), device=ids.device)
        out: list[list[int]] = [[] for _ in questions]
        for _ in range(max_new_tokens):
            with self._autocast():
                spliced = self._splice(ids, mask, None, visual)
                logits = self.lm(**spliced).logits
            n_vis = spliced["inputs_embeds"].shape[1] - ids.shape[1]
            nxt = logits[torch.arange(len(ids)), lengths - 1 + n_vis].argmax(dim=-1)  # (B,)
            done |= torch.isin(nxt, stops)
            for i in torch.nonzero(~done).flatten().tolist():
                out[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            ids = torch.cat([ids, torch.full_like(ids[:, :1], self.tokenizer.pad_token_id)], 1)
            mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
            ids[torch.arange(len(ids)), lengths] = nxt
            mask[torch.arange(len(ids)), lengths] = 1
            lengths = lengths + 1
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]

    # ---- accounting -----------------------------------------------------------------------

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameters, frozen experts included in the total."""
        params = list(self.parameters())
        return (sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))

    def visual_cost(self) -> tuple[int, int]:
        """(visual_tokens, positions_used) of this model, from its fusion's output grids."""
        grids = self._probe_grids()
        _, used = group_offsets(grids, self.point.positions)
        return sum(h * w for h, w in grids), used

    def _probe_grids(self) -> list[tuple[int, int]]:
        images = torch.zeros(1, 3, self.point.data.image_size, self.point.data.image_size,
                             dtype=torch.uint8, device=next(self.fusion.parameters()).device)
        with torch.no_grad():
            return self.visual(images).grids


def build_vlm(point: TrialConfig, random_weights: bool = False) -> VLM:
    """The VLM of a design point (experts frozen, LM prepared for its train mode).
    `random_weights`: real checkpoints' architectures from their configs with random weights,
    nothing loaded (the resource model's checks and benchmarks; under `torch.device("meta")`
    for paper scale on a laptop)."""
    return VLM(point, random_weights)
