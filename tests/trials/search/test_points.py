"""`train_points`: a fixed list of points in worker processes, each heard starting and finishing."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space import TrialConfig, TrialResult, load_point
from trials import train_points

POINT = """\
name: p
data: {benchmark: probe, train_size: 32, eval_size: 16, image_size: 64, seed: 0}
experts: {clip: {source: tiny-clip, tokens: 4}}
fusion: {kind: channel_concat}
train: {steps: 2, batch_size: 8, seed: SEED}
"""


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def point_started(self, key: object, point: TrialConfig) -> None:
        self.events.append(("started", key))

    def point_finished(self, key: object, result: TrialResult) -> None:
        self.events.append(("finished", key))


# unequal grids cannot be interleaved: the build fails, and the other points go on
BAD = {"experts": {"clip": {"source": "tiny-clip", "tokens": 4},
                   "dinov2": {"source": "tiny-dinov2", "tokens": 16}},
       "fusion": {"kind": "sequence_concat", "interleave": True}}


def point(folder: Path, seed: int) -> TrialConfig:
    path = folder / f"point-{seed}.yaml"
    path.write_text(POINT.replace("SEED", str(seed)))
    return load_point(path)[0]


@pytest.mark.slow
def test_points_train_in_workers_and_a_bad_one_fails(tmp_path: Path) -> None:
    good, other = point(tmp_path, 0), point(tmp_path, 1)
    bad = TrialConfig.model_validate({**good.canonical(), **BAD})  # (unchecked, as a plugin might give)
    sink = Recorder()
    results = train_points([("a", good), ("b", other), ("c", bad)], sink, cache_dir=tmp_path / "cache",
                           concurrency=2)
    assert set(results) == {"a", "b", "c"}
    assert results["a"].status == results["b"].status == "complete"
    assert results["a"].steps == 2 and 0 <= results["a"].metrics["accuracy"] <= 1
    assert results["c"].status == "failed" and results["c"].failure.reason == "invalid"
    assert sorted(sink.events) == sorted([(e, k) for k in "abc" for e in ("started", "finished")])
    assert sink.events.index(("started", "a")) < sink.events.index(("finished", "a"))
