"""The typed YAML search space of vlmsearch (no torch import: `vlmsearch check` is instant)."""

from search_space.components import register_evaluator_plugins
from search_space.cost import Cost, CostRange, point_cost, position_ids, space_cost_range
from search_space.errors import InvalidDesign, Problem, SpaceError
from search_space.load import Loaded, load, load_point, parse
from search_space.pareto import hypervolume, non_dominated_ranks, pareto_mask
from search_space.point import ExpertConfig, TrialConfig
from search_space.sampling import CompiledSpace, OptunaDraw, RandomDraw, compile_space
from search_space.space import Constraint, Objective, SearchSpace

register_evaluator_plugins()  # entry points; last, since a plugin imports from this package

__all__ = [
    "CompiledSpace",
    "Constraint",
    "Cost",
    "CostRange",
    "ExpertConfig",
    "InvalidDesign",
    "Loaded",
    "Objective",
    "OptunaDraw",
    "Problem",
    "RandomDraw",
    "SearchSpace",
    "SpaceError",
    "TrialConfig",
    "compile_space",
    "hypervolume",
    "load",
    "load_point",
    "non_dominated_ranks",
    "pareto_mask",
    "parse",
    "point_cost",
    "position_ids",
    "space_cost_range",
]
