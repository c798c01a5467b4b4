"""Benchmarks: the built-in probe and LLaVA-format data sets, behind one registry.

Importing this package registers every loader; `load_benchmark(point.data)` gives (train, eval).
"""

from trials.data import llava, probe
from trials.data.base import BENCHMARKS, ChatDataset, EvalSet, QADataset, check_data, load_benchmark
from trials.data.llava import DataError
from trials.data.probe import ProbeSplit, probe_splits

__all__ = ["BENCHMARKS", "ChatDataset", "DataError", "EvalSet", "ProbeSplit", "QADataset", "check_data",
           "llava", "load_benchmark", "probe", "probe_splits"]
