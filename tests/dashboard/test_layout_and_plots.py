"""A point as MLflow params within MLflow's limits; the front as CSV, PNG and HTML."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

from mlflow.utils import validation

from dashboard import layout
from dashboard.plots import Design, axes, pareto_csv, pareto_html, pareto_png

OBJECTIVES = [SimpleNamespace(metric="accuracy", direction="maximize"),
              SimpleNamespace(metric="visual_tokens", direction="minimize")]
CONFIG = {"experts": {"clip": {"layers": [-1, -2], "tokens": 16}, "dinov2": {"layers": -1}},
          "fusion": {"kind": "sequence_concat", "interleave": False}, "positions": "share_by_row",
          "projector": "mlp2x_gelu", "train": {"lr": 0.001, "steps": 300}}


def test_our_limits_are_mlflows() -> None:
    assert layout.MAX_KEY == validation.MAX_ENTITY_KEY_LENGTH
    assert layout.MAX_PARAM_VALUE == validation.MAX_PARAM_VAL_LENGTH
    assert layout.MAX_TAG_VALUE == validation.MAX_TAG_VAL_LENGTH
    assert layout.MAX_PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert layout.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH


def test_a_point_flattens_to_dotted_params() -> None:
    params = layout.point_params(CONFIG)
    assert params["experts"] == "clip,dinov2"  # the subset, in order
    assert params["experts.clip.layers"] == "[-1, -2]"
    assert params["experts.dinov2.layers"] == "-1"
    assert params["fusion.kind"] == "sequence_concat" and params["fusion.interleave"] == "false"
    assert params["train.lr"] == "0.001" and params["positions"] == "share_by_row"


def test_long_keys_and_values_fit_and_stay_distinct() -> None:
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    params = layout.point_params({long_a: 1, long_b: 2, "big": "v" * 10_000})
    assert all(len(k) <= layout.MAX_KEY for k in params) and len(params) == 3
    assert len(params["big"]) == layout.MAX_PARAM_VALUE and params["big"].endswith(layout.TRUNCATED)
    assert layout.point_params({long_a: 1}) == {k: v for k, v in params.items() if v == "1"}  # stable


def test_chunks_respect_batch_sizes() -> None:
    assert [len(c) for c in layout.chunks(list(range(250)), 100)] == [100, 100, 50]


def test_pareto_tags() -> None:
    assert layout.pareto_tags(0, "complete") == {"pareto_rank": "0", "is_pareto": "true"}
    assert layout.pareto_tags(2, "complete") == {"pareto_rank": "2", "is_pareto": "false"}
    assert layout.pareto_tags(None, "complete") == {"pareto_rank": "none", "is_pareto": "false"}
    assert layout.pareto_tags(0, "pruned") == {"pareto_rank": "none", "is_pareto": "false"}


DESIGNS = [Design(0, {"accuracy": 0.5, "visual_tokens": 80}, 0, CONFIG, "h0", "r0"),
           Design(1, {"accuracy": 0.3, "visual_tokens": 16}, 0, CONFIG, "h1", "r1"),
           Design(2, {"accuracy": 0.2, "visual_tokens": 80}, 1, CONFIG, "h2", "r2"),
           Design(3, {"accuracy": 0.9, "visual_tokens": 900}, None, CONFIG, "h3", "r3")]


def test_csv_lists_the_front_best_first() -> None:
    rows = list(csv.DictReader(io.StringIO(pareto_csv(DESIGNS, OBJECTIVES))))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert rows[0]["design"] == "clip+dinov2 | sequence_concat | share_by_row | mlp2x_gelu"
    assert (rows[1]["config_hash"], rows[1]["run_id"], rows[1]["visual_tokens"]) == ("h1", "r1", "16")


def test_png_and_html_show_every_design_by_kind() -> None:
    assert pareto_png(DESIGNS, OBJECTIVES, "t")[:8] == b"\x89PNG\r\n\x1a\n"
    page = pareto_html(DESIGNS, OBJECTIVES, "study <x>", 1.5)
    assert page.count('class="front"') == 2 and page.count('class="dominated"') == 1
    assert page.count('class="infeasible"') == 1 and "study &lt;x&gt;" in page
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")


def test_one_objective_plots_against_the_trial_number() -> None:
    x, y = axes(OBJECTIVES[:1])
    assert (x.metric, y.metric) == ("trial", "accuracy")
    assert pareto_html(DESIGNS, OBJECTIVES[:1], "t", 0.0).count("<circle") == 3
