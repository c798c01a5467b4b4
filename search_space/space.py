"""The YAML file: a search space, or (every range a single value) a point.

Space models are derived from the point models field by field, so there is one schema: each
field of a point model accepts, in a space, also `{choices: [...]}` or `{low, high, ...}`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)

from search_space.components import EVALUATORS, metric_problem
from search_space.errors import SectionError
from search_space.fusions import PositiveInt
from search_space.numbers import Seed
from search_space.point import (
    DataConfig,
    ExpertConfig,
    Frozen,
    LanguageModelConfig,
    PositionName,
    ProjectorName,
    Projectors,
    Stage,
    TrainConfig,
    fusion_union,
    projector_map_problem,
    projectors_of,
    registered,
)
from search_space.ranges import TAG, Choices, TunableScalar, tunable
from search_space.reductions import reduce_union
from search_space.resources.devices import DEVICE_PROFILES, default_profile
from search_space.strategies import BACKENDS, EARLY_STOPPING, SAMPLERS

_CACHE: dict[type[BaseModel], type[BaseModel]] = {}


def tunable_model(point_model: type[BaseModel], fixed: frozenset[str] = frozenset({"kind"}),
                  own: dict[str, Any] | None = None) -> type[BaseModel]:
    """The space form of `point_model`: every field but `fixed` ones may hold a range; `own`
    gives a field its space annotation outright (a list of records whose fields are tunable)."""
    if point_model in _CACHE:
        return _CACHE[point_model]
    fields: dict[str, Any] = {}
    for name, info in point_model.model_fields.items():
        inner = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        annotation = (own or {}).get(name) or (inner if name in fixed else tunable(inner))
        fields[name] = (annotation, Field(default=info.default, description=info.description))
    model = create_model(f"{point_model.__name__}Space", __base__=Frozen, **fields)
    model.point_model = point_model  # type: ignore[attr-defined]
    _CACHE[point_model] = model
    return model


ExpertSpace = tunable_model(ExpertConfig, frozenset({"primary", "trust_remote_code"}), own={
    "reduce": tunable(reduce_union(tunable_model))})  # a mapping's keys are tunable too
LanguageModelSpace = tunable_model(LanguageModelConfig)
StageSpace = tunable_model(Stage)
TrainSpace = tunable_model(TrainConfig, own={
    "stages": Annotated[list[StageSpace], Field(min_length=1)] | None})  # type: ignore[valid-type]
FusionOption = fusion_union(tunable_model)
FusionSpace = tunable(FusionOption)


class SubsetBounds(Frozen):
    """Which subsets of the pool are sampled."""

    min: PositiveInt = 1
    max: PositiveInt | None = None  # default: the pool size
    require: list[str] = []
    forbid_together: list[Annotated[list[str], Field(min_length=2)]] = []


class ExpertPool(Frozen):
    pool: Annotated[dict[str, ExpertSpace], Field(min_length=1)]  # type: ignore[valid-type]
    subset: SubsetBounds = SubsetBounds()


def _experts_shape(value: Any) -> str:
    if isinstance(value, ExpertPool) or (isinstance(value, dict) and "pool" in value):
        return TAG + "pool"
    return TAG + "fixed"


ExpertsField = Annotated[
    Union[  # noqa: UP007
        Annotated[ExpertPool, Tag(TAG + "pool")],
        Annotated[Annotated[dict[str, ExpertSpace], Field(min_length=1)],  # type: ignore[valid-type]
                  Tag(TAG + "fixed")],
    ],
    Discriminator(_experts_shape),
]


def _metric(name: str) -> str:
    problem = metric_problem(name, skills=None, evals=None)
    if problem:
        raise ValueError(problem)
    return name


MetricName = Annotated[str, AfterValidator(_metric)]


def study_name_problem(name: str) -> str | None:
    """Why `name` cannot name a study (it also names a folder under the run directory), or None:
    the one rule for the YAML's `name` and for `--study`."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}", name):
        return (f"name '{name}' must start with a letter or digit and hold only letters, digits, '_', "
                "'.' and '-' (at most 100); it names the study")
    return None


def _study_name(name: str) -> str:
    problem = study_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


StudyName = Annotated[str, AfterValidator(_study_name)]


class Objective(Frozen):
    metric: MetricName
    direction: Literal["maximize", "minimize"]


class Constraint(Frozen):
    """`metric <= max` and/or `metric >= min`; a point breaking it is infeasible."""

    metric: MetricName
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Constraint:
        if self.max is None and self.min is None:
            raise ValueError(f"constraint on '{self.metric}' needs `max`, `min` or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max}); swap them")
        return self

    def satisfied(self, value: float) -> bool:
        return (self.max is None or value <= self.max) and (self.min is None or value >= self.min)

    def violation(self, value: float) -> float:
        """How far `value` is outside the bounds (<= 0 when satisfied), Optuna's convention."""
        over = value - self.max if self.max is not None else float("-inf")
        under = self.min - value if self.min is not None else float("-inf")
        return max(over, under)


class EarlyStopping(Frozen):
    kind: Annotated[str, registered(EARLY_STOPPING)] = "none"
    min_steps: PositiveInt = 50
    reduction_factor: Annotated[int, Field(ge=2)] = 3


class Resources(Frozen):
    """Per trial; `gpu` may be fractional (Ray packs several trials on one GPU), and above one
    a whole number (the trial runs data-parallel on that many). The rest is what the resource
    model plans with (`vlmsearch check`, `est_*` metrics, `micro_batch: auto`)."""

    cpu: Annotated[float, Field(gt=0)] = 1.0
    gpu: Annotated[float, Field(ge=0)] = 0.0
    workers: PositiveInt | None = None   # data-parallel processes per trial; default: gpu (>= 1)
    device_profile: Annotated[str, registered(DEVICE_PROFILES)] | None = None  # default: h100 / cpu
    mfu: Annotated[float, Field(gt=0, le=1)] = 0.4   # model FLOPs utilisation for est_gpu_hours
    text_tokens: PositiveInt | None = None           # text tokens per sample; default: the data's

    @model_validator(mode="after")
    def _whole_gpus(self) -> Resources:
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ValueError(f"gpu: {self.gpu:g} — a trial on more than one GPU takes whole GPUs; "
                             f"use {int(self.gpu)} or {int(self.gpu) + 1}")
        return self

    @property
    def world_size(self) -> int:
        """Data-parallel processes of one trial."""
        return self.workers or max(1, int(self.gpu))

    @property
    def profile(self) -> str:
        return self.device_profile or default_profile(self.gpu)


# one projector (tunable), or one per pool member (each tunable), or a choice among those
ProjectorSpace = tunable(projectors_of(tunable(ProjectorName)))


def _projector_maps(value: Any) -> list[dict[str, Any]]:
    """The per-expert mappings a space's `projector` may take."""
    options = value.choices if isinstance(value, Choices) else [value]
    return [o for o in options if isinstance(o, dict)]


class SeedPoint(Frozen):
    """A design tried before any sampled one; sections left out come from the space."""

    experts: Annotated[dict[str, ExpertConfig], Field(min_length=1)]
    fusion: FusionOption | None = None  # type: ignore[valid-type]
    projector: Projectors | None = None
    positions: PositionName | None = None
    language_model: LanguageModelConfig | None = None
    train: TrainConfig | None = None


class SearchConfig(Frozen):
    backend: Annotated[str, registered(BACKENDS)] = "optuna"
    sampler: Annotated[str, registered(SAMPLERS)] = "auto"
    trials: PositiveInt = 20
    concurrency: PositiveInt = 1
    early_stopping: EarlyStopping = EarlyStopping()
    resources: Resources = Resources()
    seed_points: list[SeedPoint] = []
    seed: Seed = 0


ParameterName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=100)]


VLM_SECTIONS = ("experts", "language_model", "fusion", "projector", "positions")  # what only a VLM reads


class SearchSpace(Frozen):
    """A whole YAML file. A point is a space with no free parameter.

    `evaluator: vlm` (the default) trains each design as a VLM from the sections `experts`,
    `fusion`, `projector`, `positions`, `language_model`, `train`. Any other evaluator reads only
    `parameters:` (name -> value, `{choices}` or `{low, high}`): the same sampling, study,
    store and dashboard, over a design that is not a VLM.
    """

    kind_name: ClassVar[str] = "search space"

    name: StudyName
    evaluator: Annotated[str, registered(EVALUATORS)] = "vlm"
    parameters: dict[ParameterName, TunableScalar] = {}  # type: ignore[valid-type]
    data: DataConfig = DataConfig()
    language_model: LanguageModelSpace = LanguageModelSpace()  # type: ignore[valid-type]
    experts: ExpertsField | None = None
    fusion: FusionSpace = Field({"kind": "channel_concat"}, validate_default=True)  # type: ignore[valid-type]
    projector: ProjectorSpace = "mlp2x_gelu"  # type: ignore[valid-type]
    positions: tunable(PositionName) = "original"  # type: ignore[valid-type]
    train: TrainSpace = TrainSpace()  # type: ignore[valid-type]
    objectives: list[Objective] = []
    constraints: list[Constraint] = []
    search: SearchConfig = SearchConfig()
    storage: str | None = None
    tracking: str | None = None

    @model_validator(mode="after")
    def _sections_of_the_evaluator(self) -> SearchSpace:
        if self.trains_vlm:
            if self.experts is None:
                raise ValueError("`experts` is missing: a VLM design needs at least one vision "
                                 "expert, e.g. experts: {clip: {source: tiny-clip}}")
            for mapping in _projector_maps(self.projector):
                problem = projector_map_problem(mapping, list(self.pool))
                if problem:
                    raise SectionError(("projector",), problem.replace("not an expert", "not in the pool"))
            if self.parameters:
                raise ValueError("`parameters` is read only by a non-VLM evaluator (e.g. "
                                 "evaluator: nasbench201); tune a VLM through its own sections "
                                 "(experts, fusion, positions, train, ...)")
            return self
        written = [name for name in VLM_SECTIONS if name in self.model_fields_set]
        if written:
            raise SectionError((written[0],), f"evaluator '{self.evaluator}' trains no VLM, so "
                               f"`{written[0]}` would be ignored; remove it, or remove `evaluator` to "
                               "search VLMs")
        if not self.parameters:
            raise ValueError(f"evaluator '{self.evaluator}' reads its design from `parameters:` "
                             "(name: value, {choices: [...]} or {low, high}); add them")
        return self

    @property
    def trains_vlm(self) -> bool:
        return EVALUATORS.get(self.evaluator).trains_vlm

    @property
    def pool(self) -> dict[str, Any]:
        if self.experts is None:
            return {}
        return self.experts.pool if isinstance(self.experts, ExpertPool) else dict(self.experts)

    @property
    def subset(self) -> SubsetBounds:
        """Bounds of the sampled subset; a fixed `experts:` mapping means all of them."""
        if isinstance(self.experts, ExpertPool):
            return self.experts.subset
        if self.experts is None:
            return SubsetBounds()
        n = len(self.experts)
        return SubsetBounds(min=n, max=n, require=list(self.experts))

    def expert_path(self, name: str) -> tuple[str, ...]:
        """The YAML path of pool member `name`."""
        base = ("experts", "pool") if isinstance(self.experts, ExpertPool) else ("experts",)
        return (*base, name)

    def max_steps(self) -> int:
        """The longest training a design of this space can have (with stages: their total)."""
        from search_space.ranges import possible_values

        if self.train.stages:
            return sum(max(int(v) for v in possible_values(s.steps)) for s in self.train.stages)
        return max(int(v) for v in possible_values(self.train.steps))

    def fusion_options(self) -> list[Any]:
        """The fusion entries that can be chosen (each may hold ranges)."""
        return list(self.fusion.choices) if isinstance(self.fusion, Choices) else [self.fusion]

