"""Faults inside trials, at the level of a whole search (real worker processes, a real SQLite
Optuna study): the trial is recorded with its failure, the sampler is told it failed, and the
search goes on to the requested number of trials."""

from __future__ import annotations

from pathlib import Path

import optuna

from search_space.events import Sinks
from tests.trials.search.search_helpers import make_spec
from trials.search.optuna_backend import OptunaBackend
from trials.search.sinks import MemorySink

# lr 1e9 with clipping off makes the loss non-finite within a few steps: a real NaN, not a mock
NAN_SPACE = """\
name: faults
data: {benchmark: probe, train_size: 96, eval_size: 36, image_size: 64, seed: 0}
experts: {clip: {source: tiny-clip, tokens: 4}}
positions: {choices: [original, share_all]}
train: {steps: 12, batch_size: 16, lr: {choices: [1.0e-3, 1.0e+9]}, grad_clip: 1.0e+9, warmup: 0.0}
objectives: [{metric: accuracy, direction: maximize}]
search:
  trials: 4
  concurrency: 2
  seed: 0
  seed_points:
    - {experts: {clip: {source: tiny-clip, tokens: 4}}, positions: original,
       train: {steps: 12, batch_size: 16, lr: 1.0e+9, grad_clip: 1.0e+9, warmup: 0.0}}
    - {experts: {clip: {source: tiny-clip, tokens: 4}}, positions: share_all,
       train: {steps: 12, batch_size: 16, lr: 1.0e-3, grad_clip: 1.0e+9, warmup: 0.0}}
"""


def test_a_nan_trial_is_recorded_failed_told_to_the_sampler_and_the_search_goes_on(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, NAN_SPACE)
    memory = MemorySink()
    backend = OptunaBackend(spec, Sinks([memory]))
    backend.prepare()
    backend.run()
    results = memory.results
    assert sorted(results) == [0, 1, 2, 3], "the search ran to the requested trials"
    assert results[0].status == "failed" and results[0].failure is not None
    assert results[0].failure.reason == "nan" and "lower the learning rate" in results[0].failure.message
    assert results[1].status == "complete"
    study = optuna.load_study(study_name="faults", storage=spec.storage)
    by_number = {t.number: t for t in study.trials}
    assert by_number[0].state == optuna.trial.TrialState.FAIL
    assert by_number[0].user_attrs["failure_reason"] == "nan"
    assert by_number[1].state == optuna.trial.TrialState.COMPLETE and by_number[1].values
    for number, result in results.items():  # every failure the sampler saw is a recorded one
        if by_number[number].state == optuna.trial.TrialState.FAIL:
            assert result.status == "failed" and result.failure is not None
