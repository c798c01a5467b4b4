"""What turns one design point into measured numbers: `run_trial(point, TrialOptions(...))`
(any evaluator; always a result), the VLM and its data, the feature cache, the resource check,
and the search drivers (the backends, `SearchSpec`, `StudyState`; `train_points` for a fixed
list of points). Names are imported when first used, so `import trials` loads no torch, Optuna
or Ray."""

from __future__ import annotations

from common import lazy_names

_WHERE = {  # public name -> "module" (the same name there) or "module:attribute"
    "TrialOptions": "trials.outcome", "run_trial": "trials.outcome",
    "FeatureCache": "trials.cache", "default_cache": "trials.train", "with_steps": "trials.train",
    "train_vlm": "trials.train",
    # the VLM and its data
    "build_vlm": "trials.vlm.model", "ChatFormat": "trials.vlm.chat", "load_tokenizer": "trials.vlm.lm",
    "word_tokenizer": "trials.vlm.lm",
    "load_benchmark": "trials.data", "check_data": "trials.data", "check_evalsets": "trials.data.evalsets",
    "load_llava": "trials.data.llava", "image_problem": "trials.data.llava",
    "read_records": "trials.data.records", "record_column": "trials.data.records:column",
    "nasbench201_table": "trials.evaluators.nasbench201:table",
    "HPO_TABLE_KINDS": "trials.evaluators.hpo_tables:KINDS",
    "hpo_table": "trials.evaluators.hpo_tables:table", "hpo_table_key": "trials.evaluators.hpo_tables:key",
    # the resource model against the built VLM (bench/resource_model.py)
    # one connector on its own (bench/operators.py)
    "build_fusion": "trials.vlm.fusion", "Features": "trials.vlm.reduce", "out_width": "trials.vlm.experts",
    "count_flops": "trials.measure",
    "SMALL_DESIGNS": "trials.resource_check:SMALL", "measure_step": "trials.resource_check:measure",
    "predict_step": "trials.resource_check:predict",
    # the search drivers
    "SearchSpec": "trials.search.study", "SearchError": "trials.search.study",
    "StudyState": "trials.search.study", "objective_values": "trials.search.study",
    "backend_class": "trials.search.backend", "OptunaBackend": "trials.search.optuna_backend",
    "RayBackend": "trials.search.ray_backend", "OPTUNA_SAMPLERS": "trials.search.samplers:SAMPLERS",
    "JsonLinesSink": "trials.search.sinks",
    # expert similarity (linear CKA of the pool's features; `vlmsearch experts --similarity`)
    "expert_similarity": "trials.similarity", "pool_features": "trials.similarity",
    "PointSink": "trials.search.points", "train_points": "trials.search.points",
}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy_names(__name__, _WHERE)
