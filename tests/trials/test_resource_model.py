"""The resource model against the built VLM, whole designs at once (trials.resource_check):
parameters exact and training-step FLOPs within 10% of FlopCounterMode (in fact equal) for the
papers' designs at their scale on the meta device; bytes saved for backward per sample within
20% on real CPU tensors for small designs of the same families and operators."""

from __future__ import annotations

from pathlib import Path

import pytest

from search_space import TrialConfig, load_point
from trials.resource_check import SMALL, measure, predict

ROOT = Path(__file__).resolve().parents[2]
# LEO's InternViT is remote code, which vlmsearch does not build: its trace is held to a
# reference forward in tests/search_space/test_resources_internvit.py, LEO's connector by the
# `leo-unshuffle-interleave` small design
REMOTE_CODE = {"leo"}
PAPERS = [pytest.param(p, marks=pytest.mark.skip(reason="remote-code expert: not buildable"))
          if p.stem in REMOTE_CODE else p for p in sorted((ROOT / "examples" / "papers").glob("*.yaml"))]
TEXT_TOKENS = 48


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPERS, ids=[getattr(p, "values", [p])[0].stem for p in PAPERS])
def test_paper_designs_parameters_exact_and_step_flops_as_counted(path: Path) -> None:
    point, _ = load_point(path)
    measured, predicted = measure(point, TEXT_TOKENS, split=False), predict(point, TEXT_TOKENS)
    assert (measured.trainable, measured.total) == (predicted.trainable, predicted.total)
    step = predicted.forward + predicted.backward
    assert measured.backward == pytest.approx(step, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SMALL))
def test_small_designs_saved_bytes_within_20_percent(name: str) -> None:
    point = TrialConfig.model_validate({"name": name, "data": {"image_size": 96},
                                        "train": {"batch_size": 4}, **SMALL[name]})
    measured, predicted = measure(point, TEXT_TOKENS, on_cpu=True), predict(point, TEXT_TOKENS)
    assert (measured.trainable, measured.total) == (predicted.trainable, predicted.total)
    assert measured.forward == predicted.forward and measured.backward == predicted.backward
    assert measured.saved == pytest.approx(predicted.saved, rel=0.20)
