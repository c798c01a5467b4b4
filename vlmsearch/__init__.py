"""vlmsearch: declarative AutoML for multi-encoder vision-language models.

The public Python API; the command line is `vlmsearch` (see `vlmsearch --help`).
"""

from search_space import (
    SearchSpace,
    SpaceError,
    TrialConfig,
    compile_space,
    load,
    load_point,
    point_cost,
)

__version__ = "0.1.0"
__all__ = [
    "SearchSpace",
    "SpaceError",
    "TrialConfig",
    "__version__",
    "compile_space",
    "load",
    "load_point",
    "point_cost",
]
