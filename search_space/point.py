"""One design point (`TrialConfig`): what `trials` builds and what the config hash identifies."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from search_space.components import EVALUATORS, MERGES, POSITIONS, PROJECTORS
from search_space.fusions import FUSIONS, ChannelConcat, FusionParams, PositiveInt, SquareInt
from search_space.presets import LM_PRESETS, PRESETS
from search_space.ranges import TAG, Scalar
from search_space.registry import Registry, unknown_name_message

BENCHMARKS = ("probe", "llava")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        return source

    return AfterValidator(check)


ExpertSource = Annotated[str, _preset_source(PRESETS)]
LMSource = Annotated[str, _preset_source(LM_PRESETS)]
ProjectorName = Annotated[str, registered(PROJECTORS)]
PositionName = Annotated[str, registered(POSITIONS)]
MergeName = Annotated[str, registered(MERGES)]
LayerSel = int | Annotated[tuple[int, ...], Field(min_length=1)]
ImageSide = Annotated[int, Field(ge=16, le=4096)]


class DataConfig(Frozen):
    """The benchmark every trial trains and evaluates on (not searched over)."""

    benchmark: Literal["probe", "llava"] = "probe"
    path: str | None = None          # llava: the conversation JSON file
    image_folder: str | None = None  # llava: where its images are
    train_size: PositiveInt = 2000
    eval_size: PositiveInt = 400
    image_size: ImageSide = 96
    seed: int = 0


class LanguageModelConfig(Frozen):
    source: LMSource = "tiny-llama"
    train: Literal["frozen", "lora", "full"] = "full"
    lora_rank: PositiveInt = 8


class ExpertConfig(Frozen):
    """One frozen vision expert: which layers, merged how, reduced to how many tokens."""

    source: ExpertSource
    layers: LayerSel = -1
    merge: MergeName = "layerscale"
    tokens: SquareInt | None = None      # reduce to a sqrt(tokens) square grid; null keeps all
    image_size: ImageSide | None = None  # the expert's input side; null: its native size
    primary: bool = False                # the primary expert of mr_adapter / cross_attention

    @property
    def layer_list(self) -> tuple[int, ...]:
        return (self.layers,) if isinstance(self.layers, int) else tuple(self.layers)


class TrainConfig(Frozen):
    steps: PositiveInt = 300
    batch_size: PositiveInt = 32
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    warmup: Annotated[float, Field(ge=0, lt=1)] = 0.05  # fraction of steps
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    eval_every: PositiveInt | None = None                # default: only at the end
    seed: int = 0


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
    projector: ProjectorName = "mlp2x_gelu"
    positions: PositionName = "original"
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _has_experts(self) -> TrialConfig:
        if self.trains_vlm and not self.experts:
            raise ValueError("`experts` is missing or empty: a VLM design needs at least one vision "
                             "expert")
        return self

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


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value
