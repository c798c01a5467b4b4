"""The resource model of one design point on one device profile, before anything is built.

From the models' configs alone (presets, known checkpoints, local `config.json`): parameters
by part and which train, bytes of weights, gradients and AdamW state, activation bytes of one
training sample, the micro-batch and gradient checkpointing that fit the device, FLOPs of a
training step and of the whole trial, and GPU-hours at the device's peak and the YAML's MFU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from search_space.cost import expert_grid, fusion_plan, layer_shapes, point_cost
from search_space.fusions import FUSIONS
from search_space.point import ExpertConfig, Stage, TrialConfig
from search_space.presets import NECK, ExpertInfo, expert_info
from search_space.resources.blocks import Block, Flow
from search_space.resources.connector import MERGE_COSTS, ExpertShape, connector_cost
from search_space.resources.devices import DEVICE_PROFILES, GB, DeviceProfile
from search_space.resources.lm import LMArch, lm_arch, lm_cost, lm_forward_flops
from search_space.resources.ops import DTYPE_BYTES, PartCost
from search_space.resources.vision import VISION_FAMILIES
from search_space.resources.vision import vision_cost as _vision_cost

MARGIN = 0.9              # plan to use at most this share of the device's memory
ADAMW_STATE_BYTES = 8     # exp_avg and exp_avg_sq in fp32, per trainable parameter
MASTER_BYTES = 4          # trainable weights and their gradients stay fp32
TEXT_TOKENS = {"probe": 16, "llava": 1024}  # text tokens per sample the model plans for
EVAL_FORWARDS = {"probe": 1, "llava": 8}    # forwards per evaluated sample (8: greedy answers)
MIN_UNCHECKPOINTED = 4    # auto: checkpoint when fewer samples than this fit without it
T = TypeVar("T")


_MEMO: dict[tuple[object, ...], object] = {}
MEMO_SIZE = 100_000  # remembered part costs (a space's designs share their experts and LM)


def _remember(key: tuple[object, ...], compute: Callable[[], T]) -> T:
    if key not in _MEMO:
        if len(_MEMO) >= MEMO_SIZE:
            _MEMO.clear()
        _MEMO[key] = compute()
    return _MEMO[key]  # type: ignore[return-value]


def vision_cost(info: ExpertInfo, image_size: int, train: str = "frozen", **kwargs: object) -> PartCost:
    """`resources.vision.vision_cost`, remembered."""
    key = ("vision", repr(info), image_size, train, tuple(sorted(kwargs.items())))
    return _remember(key, lambda: _vision_cost(info, image_size, train, **kwargs))  # type: ignore[arg-type]


class CannotEstimate(ValueError):
    """A part's configuration is unknown without downloading it."""


@dataclass(frozen=True)
class Part:
    """One part of the VLM in one stage: what it holds and what one sample costs it."""

    name: str
    params: int
    trainable: int
    weight_bytes: int      # its weights as stored (frozen ones in the compute precision)
    state_bytes: int       # gradients and AdamW state of what trains (+ bf16 weight copies)
    activation_bytes: int  # saved for backward per sample
    forward: int           # FLOPs per sample
    backward: int


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    parts: tuple[Part, ...]

    def static_bytes(self) -> int:
        return sum(p.weight_bytes + p.state_bytes for p in self.parts)

    def per_sample_bytes(self) -> int:
        return sum(p.activation_bytes for p in self.parts)

    def step_flops(self, batch: int) -> int:
        return batch * sum(p.forward + p.backward for p in self.parts)


@dataclass(frozen=True)
class Estimate:
    """The resource model's answer for one point on one device profile."""

    profile: str
    precision: str
    seq_len: int
    micro_batch: int
    checkpointing: bool
    stages: tuple[StagePlan, ...]
    mem_bytes: int           # peak accelerator memory of training at `micro_batch`
    train_flops: int         # the whole trial: steps, evaluations, feature extraction
    gpu_hours: float
    fits: bool
    max_positions: int | None
    positions_needed: int
    world: int = 1

    def memory_at(self, micro_batch: int) -> int:
        """Peak bytes at another micro-batch, the rest unchanged."""
        return _peak(self.stages, micro_batch, self.world)

    @property
    def parts(self) -> tuple[Part, ...]:
        """Each part at the stage where it holds the most."""
        best: dict[str, Part] = {}
        for plan in self.stages:
            for part in plan.parts:
                old = best.get(part.name)
                if old is None or part.weight_bytes + part.state_bytes > old.weight_bytes + old.state_bytes:
                    best[part.name] = part
        return tuple(best.values())

    def metrics(self) -> dict[str, float]:
        return {"est_mem_gb": self.mem_bytes / GB, "est_train_tflop": self.train_flops / 1e12,
                "est_gpu_hours": self.gpu_hours, "micro_batch": float(self.micro_batch)}


# ---- parts -----------------------------------------------------------------------------------


def _info(cfg: ExpertConfig) -> ExpertInfo:
    info = expert_info(cfg.source)
    if info is None:
        raise CannotEstimate(f"expert '{cfg.source}' is not known without downloading its config; "
                             "name a local directory or a known checkpoint (vlmsearch list presets)")
    if info.family not in VISION_FAMILIES:  # generic HF models, timm, OpenCLIP: no formula yet
        raise CannotEstimate(f"expert '{cfg.source}' ({info.family} family) has no resource formula "
                             "(search_space/resources/vision_families.py); no estimate is made")
    return info


def _lm(point: TrialConfig) -> LMArch:
    source = point.language_model.source
    arch = _remember(("arch", source), lambda: lm_arch(source))
    if arch is None:
        raise CannotEstimate(f"language model '{point.language_model.source}' is not known without "
                             "downloading its config; name a local directory or a known id")
    return arch


def _bytes_of(params: int, trainable: int, precision: str) -> tuple[int, int]:
    """(weights, gradients + optimizer state): trainable weights fp32 (plus the bf16 copies
    autocast keeps for backward), frozen ones in the compute precision."""
    frozen_bytes = DTYPE_BYTES[precision]
    weights = trainable * MASTER_BYTES + (params - trainable) * frozen_bytes
    copies = trainable * DTYPE_BYTES[precision] if precision == "bf16" else 0
    return weights, trainable * (MASTER_BYTES + ADAMW_STATE_BYTES) + copies


def _part(name: str, params: int, trainable: int, precision: str, activations: int, forward: int,
          backward: int) -> Part:
    weights, state = _bytes_of(params, trainable, precision)
    return Part(name, params, trainable, weights, state, activations, forward, backward)


def _expert_parts(point: TrialConfig, stage: Stage, precision: str, recompute: bool
                  ) -> tuple[list[Part], list[ExpertShape]]:
    parts, shapes = [], []
    plan = fusion_plan(point)
    images = plan.images  # tiled: the expert runs on each tile and the thumbnail
    for index, (name, cfg) in enumerate(plan.experts):  # as the fusion reads them
        info = _info(cfg)
        size = cfg.image_size or info.image_size
        # a fusion inside the primary (mr_adapter) runs it live; while the connector trains,
        # its frozen blocks after the first adapter pass the gradient back (and keep activations)
        inside = index == 0 and FUSIONS.get(point.fusion.kind).live_primary
        grad_from = (min(point.fusion.positions(info.num_layers))
                     if inside and "connector" in stage.train else None)
        trains = cfg.train != "frozen" and "experts" in stage.train
        backprop = trains or grad_from is not None
        cost = vision_cost(info, size, cfg.train, precision=precision, recompute=recompute,
                           grad_from=None if trains else grad_from, neck=NECK in cfg.layer_list)
        # a frozen expert's features are cached (no FLOPs in the step); a live one (it trains
        # in some stage, or a fusion runs inside it) runs in every stage, keeping activations
        # for backward only where a gradient passes
        forward = cost.forward if cfg.train != "frozen" or inside else 0
        parts.append(_part(f"expert {name}", cost.params, cost.trainable if trains else 0, precision,
                           images * cost.activations if backprop else 0, images * forward,
                           images * cost.backward if backprop else 0))
        widths = [width for _, width in layer_shapes(cfg, info)]  # after the reduction
        merge = MERGE_COSTS.get(cfg.merge)
        # tokens carry a gradient from a training expert, or from a merge with weights that train
        merged = "connector" in stage.train and merge.cost(1, widths, Flow(True)).params > 0
        # (an operator inside the primary passes its own gradient on: `connector._mr_adapter`)
        shapes.append(ExpertShape(expert_grid(cfg), merge.width(widths), trains or merged,
                                  info.num_layers, info.grid(-1, size)))
    return parts, shapes


def _connector_part(point: TrialConfig, stage: Stage, shapes: list[ExpertShape], d_model: int,
                    precision: str, recompute: bool) -> Part:
    trains = "connector" in stage.train
    flow = Flow(trains, recompute=recompute)
    projector = point.fusion_projector()  # one name, or one per expert (primary first)
    merges = tuple((cfg.merge, shape.tokens, tuple(w for _, w in layer_shapes(cfg, _info(cfg))))
                   for (_, cfg), shape in zip(fusion_plan(point).experts, shapes, strict=True))
    def compute() -> Block:
        block = connector_cost(point.fusion, shapes, d_model, projector, flow)
        for merge, tokens, widths in merges:
            block = block + MERGE_COSTS.get(merge).cost(tokens, widths, flow)
        return block

    key = ("connector", point.fusion, tuple(shapes), d_model, projector, flow, merges)
    block = _remember(key, compute)
    # tiled: the merges and the fusion run on every tile (and the thumbnail); LLaVA-NeXT's
    # image_newline is one more d-vector (its copies into the sequence cost no FLOPs)
    tiling = fusion_plan(point).tiling
    images = 1 if tiling is None else tiling.images
    params = block.params + (d_model if tiling is not None and tiling.newline else 0)
    saved = images * block.saved * DTYPE_BYTES[precision]
    return _part("connector", params, params if trains else 0, precision, saved,
                 images * block.forward, images * block.backward)


def _lm_part(point: TrialConfig, arch: LMArch, stage: Stage, seq_len: int, checkpointing: bool,
             precision: str, recompute: bool) -> Part:
    mode = point.language_model.train
    if "lm" not in stage.train:  # held this stage; a LoRA LM's adapters still run
        mode = "lora-held" if mode == "lora" else "frozen"
    args = (seq_len, mode, point.language_model.lora_rank, checkpointing, precision, recompute)
    cost = _remember(("lm", arch, *args), lambda: lm_cost(arch, *args))
    return _part("lm", cost.params, cost.trainable, precision, cost.activations, cost.forward,
                 cost.backward)


def stage_plan(point: TrialConfig, stage: Stage, arch: LMArch, seq_len: int, checkpointing: bool,
               precision: str, recompute: bool = True) -> StagePlan:
    experts, shapes = _expert_parts(point, stage, precision, recompute)
    connector = _connector_part(point, stage, shapes, arch.hidden, precision, recompute)
    lm = _lm_part(point, arch, stage, seq_len, checkpointing, precision, recompute)
    return StagePlan(stage, (*experts, connector, lm))


# ---- the whole trial -------------------------------------------------------------------------


def resolve_precision(point: TrialConfig, profile: DeviceProfile) -> str:
    chosen = point.train.precision
    return ("bf16" if profile.cuda else "fp32") if chosen == "auto" else chosen


def _peak(plans: tuple[StagePlan, ...], micro_batch: int, world: int) -> int:
    ddp = max(sum(p.trainable for p in plan.parts) for plan in plans) * MASTER_BYTES * (world > 1)
    return max(plan.static_bytes() + micro_batch * plan.per_sample_bytes() for plan in plans) + ddp


def _fitting_batch(plans: tuple[StagePlan, ...], memory: float, world: int, cap: int) -> int:
    """The largest micro-batch (at most `cap`) whose peak fits `memory`; 0 when none does."""
    best = 0
    for plan in plans:
        room = memory - _peak((plan,), 0, world)
        per = max(1, plan.per_sample_bytes())
        best = min(best, int(room // per)) if best else int(room // per)
    return max(0, min(cap, best))


def estimate(point: TrialConfig, profile_name: str, mfu: float = 0.4, text_tokens: int | None = None,
             world: int = 1, memory_bytes: float | None = None, recompute: bool = True) -> Estimate:
    """The resource model of `point` (raises CannotEstimate / InvalidDesign / UnknownGeometry).
    `memory_bytes`: plan for this much free memory instead of the profile's (a real device)."""
    profile = DEVICE_PROFILES.get(profile_name)
    arch, cost = _lm(point), point_cost(point)
    precision = resolve_precision(point, profile)
    text = text_tokens or TEXT_TOKENS[point.data.benchmark]
    seq_len = text - 1 + cost.visual_tokens
    train = point.train
    per_gpu = max(1, -(-train.batch_size // world))
    memory = MARGIN * (memory_bytes if memory_bytes is not None else profile.memory_gb * GB)

    def plans(checkpointing: bool) -> tuple[StagePlan, ...]:
        return tuple(stage_plan(point, s, arch, seq_len, checkpointing, precision, recompute)
                     for s in train.stage_list())

    checkpointing = train.gradient_checkpointing is True
    chosen = plans(checkpointing)
    wanted = per_gpu if train.micro_batch == "auto" else min(per_gpu, train.micro_batch)
    fitting = _fitting_batch(chosen, memory, world, wanted)
    if train.gradient_checkpointing == "auto" and fitting < min(wanted, MIN_UNCHECKPOINTED):
        with_ckpt = plans(True)
        if _fitting_batch(with_ckpt, memory, world, wanted) > fitting:
            checkpointing, chosen = True, with_ckpt
            fitting = _fitting_batch(chosen, memory, world, wanted)
    # auto: the fewest micro-batches that fit, evenly sized (16 fitting 15 -> 2 of 8)
    micro = -(-wanted // -(-wanted // max(1, fitting))) if train.micro_batch == "auto" else wanted
    flops = _trial_flops(point, chosen, arch, seq_len, cost.visual_tokens)
    peak_tflops = profile.peak_tflops(precision) * 1e12
    return Estimate(profile_name, precision, seq_len, micro, checkpointing, chosen,
                    _peak(chosen, micro, world), flops, flops / (peak_tflops * mfu) / 3600,
                    fits=fitting >= micro,
                    max_positions=arch.max_positions, positions_needed=text + cost.positions_used,
                    world=world)


def _trial_flops(point: TrialConfig, plans: tuple[StagePlan, ...], arch: LMArch, seq_len: int,
                 visual: int) -> int:
    """Training steps, every evaluation, and the frozen experts' one pass over the data."""
    train = point.train
    steps = sum(plan.step_flops(train.batch_size) * plan.stage.steps for plan in plans)
    evaluations = 1 + (train.steps // train.eval_every if train.eval_every else 0)
    data = point.data
    per_eval_sample = sum(p.forward for p in plans[-1].parts if p.name == "connector")
    per_eval_sample += lm_forward_flops(arch, seq_len) * EVAL_FORWARDS[data.benchmark]
    extraction = 0
    images = fusion_plan(point).images  # tiled: every tile and the thumbnail
    for _, cfg in point.ordered_experts():
        info = _info(cfg)
        forward = images * vision_cost(info, cfg.image_size or info.image_size).forward
        # a training expert, or one a fusion runs inside, runs on every evaluated sample instead
        live = cfg.train != "frozen" or (cfg is point.ordered_experts()[0][1]
                                         and FUSIONS.get(point.fusion.kind).live_primary)
        extraction += forward * (data.eval_size * evaluations if live else data.train_size + data.eval_size)
    return steps + evaluations * data.eval_size * per_eval_sample + extraction
