"""The typed YAML search space of vlmsearch (no torch import: `vlmsearch check` is instant): the
space and point models, loading, sampling, the cost and resource models, the component
registries, trial results, the sinks' event types, and Pareto math. Other packages import these
names from here; modules of this package import each other directly (this file imports them)."""

from search_space.components import (
    EVALUATORS,
    METRICS,
    NB201_OPS,
    POSITIONS,
    PROBE_SKILLS,
    PROJECTORS,
    is_square,
    register_evaluator_plugins,
)
from search_space.cost import (
    MERGE_GRIDS,
    Cost,
    CostRange,
    FusionPlan,
    UnknownGeometry,
    expert_grid,
    fusion_plan,
    layer_shapes,
    point_cost,
    position_ids,
    resolved_reduction,
    space_cost_range,
)
from search_space.errors import InvalidDesign, Problem, SpaceError
from search_space.eval_formats import EvalSpec, FileField
from search_space.events import Ending, Front, Sinks, StudyInfo
from search_space.fusions import (
    FUSIONS,
    SVA,
    ChannelConcat,
    CrossAttention,
    FusionParams,
    GatedInjection,
    Grid,
    MRAdapter,
    Resampler,
    SequenceConcat,
    per_expert,
)
from search_space.legacy import stored_design
from search_space.load import Loaded, load, load_point, parse
from search_space.pareto import (
    feasible,
    hypervolume,
    hypervolume_contributions,
    non_dominated_ranks,
    objective_matrix,
    pareto_mask,
    study_front,
)
from search_space.paths import file_problem, folder_problem
from search_space.point import DataConfig, ExpertConfig, LanguageModelConfig, Stage, TrainConfig, TrialConfig
from search_space.presets import (
    FAMILIES,
    LM_PRESETS,
    NECK,
    PRESETS,
    ExpertInfo,
    expert_info,
    info_from_config,
    read_config,
)
from search_space.reductions import REDUCTIONS, reduced
from search_space.registry import Registry, did_you_mean
from search_space.resources.analytic import ANALYTIC_METRICS, assess, point_estimate
from search_space.resources.devices import DEVICE_PROFILES, GB
from search_space.resources.estimate import CannotEstimate, Estimate, StagePlan, estimate
from search_space.resources.known_lms import IMAGE_TOKEN, word_vocab
from search_space.resources.lm import known_lm, lm_arch
from search_space.resources.space import space_estimate
from search_space.result import METRIC_ORDER, Failure, FailureReason, TrialResult, result_from_json
from search_space.sampling import CompiledSpace, OptunaDraw, RandomDraw, compile_space
from search_space.seed_points import point_parameters
from search_space.sources import SourceRef, parse_source
from search_space.space import (
    Constraint,
    EarlyStopping,
    Objective,
    Resources,
    SearchSpace,
    SeedPoint,
    study_name_problem,
)
from search_space.strategies import BACKENDS, EARLY_STOPPING, SAMPLERS
from search_space.tiling import TileLayout, fitted_size
from search_space.yaml_io import dump_yaml

register_evaluator_plugins()  # entry points; last, since a plugin imports from this package

__all__ = [
    "ANALYTIC_METRICS",
    "BACKENDS",
    "DEVICE_PROFILES",
    "EARLY_STOPPING",
    "EVALUATORS",
    "FAMILIES",
    "FUSIONS",
    "GB",
    "IMAGE_TOKEN",
    "LM_PRESETS",
    "MERGE_GRIDS",
    "METRICS",
    "METRIC_ORDER",
    "NB201_OPS",
    "NECK",
    "POSITIONS",
    "PRESETS",
    "PROBE_SKILLS",
    "PROJECTORS",
    "REDUCTIONS",
    "SAMPLERS",
    "SVA",
    "CannotEstimate",
    "ChannelConcat",
    "CompiledSpace",
    "Constraint",
    "Cost",
    "CostRange",
    "CrossAttention",
    "DataConfig",
    "EarlyStopping",
    "Ending",
    "Estimate",
    "EvalSpec",
    "ExpertConfig",
    "ExpertInfo",
    "Failure",
    "FailureReason",
    "FileField",
    "Front",
    "FusionParams",
    "FusionPlan",
    "GatedInjection",
    "Grid",
    "InvalidDesign",
    "LanguageModelConfig",
    "Loaded",
    "MRAdapter",
    "Objective",
    "OptunaDraw",
    "Problem",
    "RandomDraw",
    "Registry",
    "Resampler",
    "Resources",
    "SearchSpace",
    "SeedPoint",
    "SequenceConcat",
    "Sinks",
    "SourceRef",
    "SpaceError",
    "Stage",
    "StagePlan",
    "StudyInfo",
    "TileLayout",
    "TrainConfig",
    "TrialConfig",
    "TrialResult",
    "UnknownGeometry",
    "assess",
    "compile_space",
    "did_you_mean",
    "dump_yaml",
    "estimate",
    "expert_grid",
    "expert_info",
    "feasible",
    "file_problem",
    "fitted_size",
    "folder_problem",
    "fusion_plan",
    "hypervolume",
    "hypervolume_contributions",
    "info_from_config",
    "is_square",
    "known_lm",
    "layer_shapes",
    "lm_arch",
    "load",
    "load_point",
    "non_dominated_ranks",
    "objective_matrix",
    "pareto_mask",
    "parse",
    "parse_source",
    "per_expert",
    "point_cost",
    "point_estimate",
    "point_parameters",
    "position_ids",
    "read_config",
    "reduced",
    "resolved_reduction",
    "result_from_json",
    "space_cost_range",
    "space_estimate",
    "stored_design",
    "study_front",
    "study_name_problem",
    "word_vocab",
]
