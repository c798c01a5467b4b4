"""One design point (`TrialConfig`): what `trials` builds and what the config hash identifies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from search_space.components import EVALUATORS, MERGES, POSITIONS, PROBE_SKILLS, PROJECTORS
from search_space.errors import InvalidDesign, SectionError
from search_space.eval_formats import EvalSpec, duplicate_labels
from search_space.fusions import FUSIONS, ChannelConcat, FusionParams, PositiveInt, SquareInt
from search_space.numbers import Seed
from search_space.presets import LM_PRESETS, PRESETS
from search_space.ranges import TAG, Scalar
from search_space.reductions import Reduce, ReduceSpec, resolve_tokens, tokens_problem
from search_space.registry import Registry, unknown_name_message
from search_space.sources import is_source_ref, parse_source
from search_space.tiling import TilingConfig

BENCHMARKS = ("probe", "llava")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def registered(registry: Registry[Any]) -> AfterValidator:
    """A string that must be a name in `registry` ("did you mean" otherwise)."""

    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(registry.unknown(name))
        return name

    return AfterValidator(check)


def _preset_source(registry: Registry[Any]) -> AfterValidator:
    """A preset name (`tiny-*`), an HF model id or a local directory."""

    def check(source: str) -> str:
        if source.startswith("tiny-") and source not in registry:
            raise ValueError(unknown_name_message(registry.kind, source, registry.names()))
        if not source.strip():
            raise ValueError("source is empty; name a preset, an HF model id or a directory")
        if is_source_ref(source):
            parse_source(source)  # timm:/open_clip: sources: their syntax
        return source

    return AfterValidator(check)


ExpertSource = Annotated[str, _preset_source(PRESETS)]
LMSource = Annotated[str, _preset_source(LM_PRESETS)]
ProjectorName = Annotated[str, registered(PROJECTORS)]
PositionName = Annotated[str, registered(POSITIONS)]
MergeName = Annotated[str, registered(MERGES)]
# one projector for every expert, or a mapping from expert name to projector (COMM: a 2-layer MLP
# for DINOv2, a linear one for CLIP); only operators that project each expert on its own read one


def projectors_of(per_expert: Any) -> Any:
    """One projector name, or a mapping of expert name to `per_expert` (a mapping is told apart
    by its shape, so a misspelt name gets one message, not one per member of the union)."""
    return Annotated[Union[  # noqa: UP007 - tags need the explicit Union form
        Annotated[ProjectorName, Tag(TAG + "name")],
        Annotated[Annotated[dict[str, per_expert], Field(min_length=1)], Tag(TAG + "map")],
    ], Discriminator(lambda v: TAG + ("map" if isinstance(v, dict) else "name"))]


Projectors = projectors_of(ProjectorName)
LayerId = int | Literal["neck"]  # a hidden-state index, or SAM's neck (presets.NECK)
LayerSel = LayerId | Annotated[tuple[LayerId, ...], Field(min_length=1)]
ImageSide = Annotated[int, Field(ge=16, le=4096)]
MergeGrid = Literal["smallest", "largest"]  # smallest: pooled down; largest: bilinear up (Mini-Gemini)


def _probe_skills(skills: tuple[str, ...]) -> tuple[str, ...]:
    """Known probe skills, each once, in the probe's order (so any spelling is one data set)."""
    unknown = [s for s in skills if s not in PROBE_SKILLS]
    if unknown:
        raise ValueError("; ".join(unknown_name_message("probe skill", s, PROBE_SKILLS) for s in unknown))
    twice = sorted({s for s in skills if skills.count(s) > 1})
    if twice:
        raise ValueError(f"data.skills lists {', '.join(twice)} more than once; name each skill once")
    return tuple(s for s in PROBE_SKILLS if s in skills)


ProbeSkills = Annotated[tuple[str, ...], Field(min_length=1), AfterValidator(_probe_skills)]


class DataConfig(Frozen):
    """The benchmark every trial trains and evaluates on (not searched over), and the evaluation
    sets scored after training (`eval`, in their released formats)."""

    added: ClassVar[frozenset[str]] = frozenset({"eval", "skip_missing", "pad_to_square", "max_length",
                                                 "skills"})

    benchmark: Literal["probe", "llava"] = "probe"
    path: str | None = None          # llava: the conversation JSON file
    image_folder: str | None = None  # llava: where its images are
    train_size: PositiveInt = 2000
    eval_size: PositiveInt = 400
    image_size: ImageSide = 96
    seed: Seed = 0
    skip_missing: bool = False       # llava: skip (and count) records whose image is missing/unreadable
    pad_to_square: bool = False      # LLaVA's expand2square, padded with the first expert's mean colour
    max_length: PositiveInt | None = None  # tokens of a training sequence (visual included); null: the LM's
    eval: tuple[EvalSpec, ...] = ()  # evaluation sets apart from the training data
    skills: ProbeSkills = PROBE_SKILLS  # probe: the skills asked, in equal shares (default: all six)

    @model_validator(mode="after")
    def _distinct_evals(self) -> DataConfig:
        twice = duplicate_labels(self.eval)
        if twice:
            raise ValueError(f"data.eval lists {', '.join(twice)} more than once; give each a distinct "
                             "`name` (it prefixes the metrics)")
        if self.benchmark != "probe" and self.skills != PROBE_SKILLS:
            raise SectionError(("skills",), f"`skills` chooses the probe's questions; benchmark "
                                            f"'{self.benchmark}' has none to choose: remove it")
        return self


class LanguageModelConfig(Frozen):
    added: ClassVar[frozenset[str]] = frozenset({"system_prompt"})

    source: LMSource = "tiny-llama"
    train: TrainMode = "full"
    lora_rank: PositiveInt = 8
    system_prompt: str | None = None  # given to the chat template (or prefixed to the plain format)


TrainMode = Literal["frozen", "lora", "full"]


class ExpertConfig(Frozen):
    """One vision expert: which layers, merged how, reduced to how many tokens (and how); frozen
    (its features cached) unless `train` says otherwise (then it runs live every step).

    Each selected layer is reduced to `tokens` before the merge (REFERENCE.md, "Token
    reduction"; `search_space.reductions`), so the cached part ends at the final grid."""

    # left out of the hash at their defaults
    added: ClassVar[frozenset[str]] = frozenset({"train", "merge_grid", "trust_remote_code", "reduce",
                                                 "tiling"})

    source: ExpertSource
    layers: LayerSel = -1                # HF hidden-state index (0 embeddings, -1 last), or neck (SAM)
    merge: MergeName = "layerscale"
    tokens: SquareInt | None = None      # reduce to a sqrt(tokens) square grid; null keeps all
    reduce: Reduce = "pool"              # how: pool, resize (EAGLE), unshuffle (LEO); a name is
    #   unread when tokens is null (`vlmsearch check` says so for a point); a mapping sets its own
    #   target: {kind: unshuffle, factor: R} | {kind: resize, grid: G} | {kind: pool, grid: G}
    image_size: ImageSide | None = None  # the expert's input side; null: its native size
    primary: bool = False                # the primary expert of mr_adapter / cross_attention
    train: TrainMode = "frozen"          # lora / full: the expert trains (EAGLE, LLaVA-HR)
    merge_grid: MergeGrid = "smallest"   # without tokens, merged layers meet at this grid (largest: MGM)
    trust_remote_code: bool = False      # run the checkpoint's own modeling code (InternViT, ...)
    tiling: TilingConfig | None = None   # run on tiles of the image (LEO / LLaVA-NeXT; search_space.tiling)

    @property
    def layer_list(self) -> tuple[LayerId, ...]:
        return (self.layers,) if isinstance(self.layers, int | str) else tuple(self.layers)

    @model_validator(mode="after")
    def _tokens_agree(self) -> ExpertConfig:
        """`tokens` beside a mapping with its own grid must be that grid's (unshuffle's factor
        needs the layer grid: `resolved` checks it)."""
        side = self.reduce.own_side() if isinstance(self.reduce, ReduceSpec) else None
        if side is not None and self.tokens is not None and self.tokens != side * side:
            raise SectionError(("tokens",), tokens_problem(self.reduce, self.tokens, side * side))
        return self

    @property
    def reduces(self) -> bool:
        """Whether the expert sets a reduction of its own (`tokens`, or a `reduce` mapping)."""
        return self.tokens is not None or isinstance(self.reduce, ReduceSpec)

    @property
    def reduce_name(self) -> str:
        """The reduction's name (`reduce`, or its mapping's `kind`)."""
        return self.reduce.kind if isinstance(self.reduce, ReduceSpec) else self.reduce

    def resolved(self, grids: Sequence[tuple[int, int]] | None) -> ExpertConfig:
        """This expert with a `reduce` mapping written in the name form (`tokens` and the name)
        for its selected layers' `grids` (None: unknown until loaded; UnknownGeometry where the
        mapping needs them); what the cost model and the modules read. A name form is itself."""
        if not isinstance(self.reduce, ReduceSpec):
            return self
        tokens = resolve_tokens(self.reduce, grids, self.tokens, self.source)
        return self.model_copy(update={"tokens": tokens, "reduce": self.reduce.kind})


LearningRate = Annotated[float, Field(gt=0)]
Part = Literal["connector", "lm", "experts"]


class Stage(Frozen):
    """One training stage (LLaVA: 1. the connector alone, 2. the connector and the LM). The
    parts listed train in it, each as its own `train` mode allows; the others are held."""

    train: Annotated[list[Part], Field(min_length=1)]
    steps: PositiveInt
    lr: LearningRate                    # the LM's (and every part's unless set below)
    connector_lr: LearningRate | None = None
    expert_lr: LearningRate | None = None

    @model_validator(mode="after")
    def _parts_once(self) -> Stage:
        if len(set(self.train)) < len(self.train):
            raise ValueError(f"stage trains {self.train}: list each part once")
        return self


class TrainConfig(Frozen):
    """The training recipe. Without `stages`, one stage trains every part its mode lets train,
    for `steps` at `lr`. `batch_size` is the effective batch; `micro_batch` what one forward
    holds (gradient accumulation makes up the rest)."""

    added: ClassVar[frozenset[str]] = frozenset({
        "micro_batch", "gradient_checkpointing", "precision", "stages", "connector_lr",
        "expert_lr"})  # left out of the hash at their defaults, so older hashes stand
    derived: ClassVar[frozenset[str]] = frozenset({"steps"})  # from `stages` when not given

    steps: PositiveInt = 300
    batch_size: PositiveInt = 32
    lr: LearningRate = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.05  # fraction of each stage's steps
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    eval_every: PositiveInt | None = None                # default: only at the end
    seed: Seed = 0
    micro_batch: Literal["auto"] | PositiveInt = "auto"  # auto: the largest that fits the device
    gradient_checkpointing: Literal["auto"] | bool = "auto"  # auto: when needed to fit
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    connector_lr: LearningRate | None = None             # default: lr
    expert_lr: LearningRate | None = None                # default: lr
    stages: Annotated[list[Stage], Field(min_length=1)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _steps_of_stages(cls, data: Any) -> Any:
        """With stages, `steps` is their total (a differing explicit `steps` is refused)."""
        if not isinstance(data, dict) or not data.get("stages"):
            return data
        stages = data["stages"]
        try:
            total = sum(int(s["steps"] if isinstance(s, dict) else s.steps) for s in stages)
        except (KeyError, TypeError, ValueError, AttributeError):
            return data  # the stage's own validation names what is missing
        if "steps" in data and data["steps"] != total:
            raise ValueError(f"train.steps ({data['steps']}) is not the stages' total ({total}); "
                             "leave train.steps out when stages are given (each has its steps)")
        return {**data, "steps": total}

    def stage_list(self) -> list[Stage]:
        """The stages this recipe runs (one, from the top-level fields, without `stages`)."""
        if self.stages:
            return list(self.stages)
        return [Stage(train=["connector", "lm", "experts"], steps=self.steps, lr=self.lr,
                      connector_lr=self.connector_lr, expert_lr=self.expert_lr)]

    def with_total_steps(self, steps: int) -> TrainConfig:
        """The recipe with `steps` in all: without stages, `steps`; with stages, each stage's
        steps scaled to that total (at least one each)."""
        if not self.stages:
            return self.model_copy(update={"steps": steps})
        if steps < len(self.stages):
            raise ValueError(f"{steps} steps cannot cover {len(self.stages)} stages; give at "
                             f"least {len(self.stages)}")
        stages, done, before = [], 0, 0
        for i, stage in enumerate(self.stages):
            done += stage.steps
            left = len(self.stages) - i - 1  # every later stage keeps at least one step
            end = min(steps - left, max(before + 1, round(done * steps / self.steps)))
            stages.append(stage.model_copy(update={"steps": end - before}))
            before = end
        return self.model_copy(update={"stages": stages, "steps": steps})


def _kind(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return TAG + kind if isinstance(kind, str) else None


def fusion_union(wrap: Callable[[type[FusionParams]], Any]) -> Any:
    """A union of every registered fusion's params (each through `wrap`), tagged by `kind`."""
    members = tuple(Annotated[wrap(kind.params), Tag(TAG + name)] for name, kind in FUSIONS.items())
    return Annotated[Union[members], Discriminator(_kind)]  # noqa: UP007


Fusion = fusion_union(lambda params: params)
DESIGN_FIELDS = ("data", "language_model", "experts", "fusion", "projector", "positions", "train")


class TrialConfig(Frozen):
    """A design point. Expert order is part of the design (sequence order; primary first).

    A point of a non-VLM evaluator is its `evaluator` and `parameters` alone."""

    name: str = "trial"
    evaluator: Annotated[str, registered(EVALUATORS)] = "vlm"
    parameters: dict[str, Scalar] = {}  # type: ignore[valid-type]
    data: DataConfig = DataConfig()
    language_model: LanguageModelConfig = LanguageModelConfig()
    experts: dict[str, ExpertConfig] = {}  # at least one for a VLM (checked below)
    fusion: Fusion = ChannelConcat()
    projector: Projectors = "mlp2x_gelu"
    positions: PositionName = "original"
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _has_experts(self) -> TrialConfig:
        if self.trains_vlm and not self.experts:
            raise ValueError("`experts` is missing or empty: a VLM design needs at least one vision "
                             "expert")
        if self.trains_vlm and isinstance(self.projector, dict):
            problem = projector_map_problem(self.projector, list(self.experts))
            if problem:
                raise ValueError(problem)
        return self

    def expert_projectors(self) -> tuple[str, ...]:
        """The projector of each expert, in fusion order (primary first)."""
        names = self.projector
        return tuple(names if isinstance(names, str) else names[n] for n, _ in self.ordered_experts())

    def fusion_projector(self) -> str | tuple[str, ...]:
        """What the fusion operator is built with: one projector name, or one per expert (in
        fusion order) for an operator that projects each expert on its own. A mapping naming
        several projectors for an operator with one shared projector is an InvalidDesign."""
        names = self.expert_projectors()
        if FUSIONS.get(self.fusion.kind).per_expert_projector:
            return names
        if len(set(names)) > 1:
            raise InvalidDesign(
                f"fusion '{self.fusion.kind}' has one shared projector, so `projector` cannot name "
                f"one per expert ({', '.join(sorted(set(names)))}); name one projector, or use a "
                f"fusion that projects each expert ({', '.join(per_expert_kinds())})")
        return names[0]

    @property
    def trains_vlm(self) -> bool:
        return EVALUATORS.get(self.evaluator).trains_vlm

    def ordered_experts(self) -> list[tuple[str, ExpertConfig]]:
        """Experts in fusion order: the one marked primary first, then as written."""
        items = list(self.experts.items())
        return sorted(items, key=lambda item: not item[1].primary)

    def canonical(self) -> dict[str, Any]:
        """The design as plain JSON data with sorted keys (the experts keep their order)."""
        if not self.trains_vlm:
            return {"evaluator": self.evaluator, "parameters": _sorted(dict(self.parameters))}
        data = self.model_dump(mode="json", include=set(DESIGN_FIELDS))
        for part in ("train", "data", "language_model", "fusion"):
            data[part] = _without_added(getattr(self, part), data[part])
        if self.train.stages:  # steps is their total, lr unread
            data["train"] = {k: v for k, v in data["train"].items() if k not in ("steps", "lr")}
        data["experts"] = {name: _expert_canonical(self.experts[name], cfg)
                           for name, cfg in data["experts"].items()}
        out = {key: _sorted(data[key]) for key in sorted(data) if key != "experts"}
        out["experts"] = {name: _sorted(cfg) for name, cfg in data["experts"].items()}
        return dict(sorted(out.items()))

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), separators=(",", ":"), allow_nan=False)

    @property
    def config_hash(self) -> str:
        """Stable identity of the design: key order and float spelling do not change it."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def to_yaml_data(self) -> dict[str, Any]:
        """The point in its YAML shape (name first), as `vlmsearch trial` reads it back."""
        return {"name": self.name, **self.canonical()}


def projector_map_problem(mapping: dict[str, Any], experts: list[str]) -> str | None:
    """Why a per-expert `projector` mapping does not fit these experts, or None."""
    unknown = [n for n in mapping if n not in experts]
    missing = [n for n in experts if n not in mapping]
    if unknown:
        return (f"`projector` names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                f"not an expert (experts: {', '.join(experts)}); key the mapping by expert name")
    if missing:
        return (f"`projector` gives no projector for {', '.join(missing)}; name one for every expert "
                "or write one projector name for all")
    return None


def per_expert_kinds() -> list[str]:
    """The fusion kinds that project each expert on its own (a per-expert `projector` fits)."""
    return [name for name, kind in FUSIONS.items() if kind.per_expert_projector]


def _without_added(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    """`dumped` without the fields added after the first release that hold their defaults, so a
    design written before they existed keeps its hash."""
    fields = type(model).model_fields
    return {key: value for key, value in dumped.items()
            if key not in getattr(model, "added", ()) or getattr(model, key) != fields[key].default}


def _expert_canonical(cfg: ExpertConfig, dumped: dict[str, Any]) -> dict[str, Any]:
    """An expert's canonical data: with a `reduce` mapping, `tokens` is the mapping's (given or
    not, it must agree), so it is left out and both spellings are one design."""
    out = _without_added(cfg, dumped)
    return {k: v for k, v in out.items() if k != "tokens"} if isinstance(cfg.reduce, ReduceSpec) else out


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value
