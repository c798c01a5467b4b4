"""Spaces that are not VLMs: `evaluator:` + `parameters:` (NAS-Bench-201's cell here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search_space.load import load, parse
from search_space.point import TrialConfig
from search_space.ranges import IntRange
from search_space.sampling import RandomDraw, compile_space
from tests.search_space.test_malformed import BASE, run_cli, write

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nasbench201.yaml"
OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
CELL = """\
name: cell
evaluator: nasbench201
parameters:
  dataset: cifar10
  op0: {choices: [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]}
  op1: nor_conv_3x3
  op2: nor_conv_3x3
  op3: {choices: [none, skip_connect]}
  op4: skip_connect
  op5: avg_pool_3x3
objectives:
  - {metric: accuracy, direction: maximize}
  - {metric: latency_ms, direction: minimize}
"""


def test_the_example_space_is_the_whole_benchmark() -> None:
    compiled = compile_space(load(EXAMPLE).space)
    assert compiled.size() == 5 ** 6 == 15625
    assert compiled.free_parameters() == [f"op{i}" for i in range(6)]
    point = compiled.sample(RandomDraw(3))
    assert set(point.canonical()) == {"evaluator", "parameters"}
    assert point.canonical()["parameters"]["dataset"] == "cifar10"
    assert all(point.parameters[f"op{i}"] in OPS for i in range(6))
    assert len({compiled.sample(RandomDraw(s)).config_hash for s in range(20)}) > 15


def test_a_point_round_trips_through_its_yaml_and_keeps_its_hash() -> None:
    point = compile_space(parse(CELL).space).sample(RandomDraw(0))
    again = compile_space(parse(yaml.safe_dump(point.to_yaml_data())).space).only_point()
    assert again == point and again.config_hash == point.config_hash
    assert TrialConfig.model_validate_json(point.model_dump_json()) == point  # how Ray ships it
    shuffled = dict(reversed(list(point.parameters.items())))
    assert point.model_copy(update={"parameters": shuffled}).config_hash == point.config_hash


def test_vlm_points_have_no_evaluator_in_their_identity() -> None:
    """Hashes of VLM designs recorded before evaluators existed stay the same."""
    point = compile_space(parse(BASE).space).sample(RandomDraw(0))
    assert point.evaluator == "vlm" and "evaluator" not in point.canonical()
    assert "parameters" not in point.canonical()


def test_integer_and_float_ranges_of_parameters() -> None:
    text = CELL.replace("evaluator: nasbench201", "evaluator: nasbench201\nsearch: {sampler: random}")
    space = parse(text).space
    assert isinstance(parse(CELL.replace("op4: skip_connect", "op4: {low: 1, high: 3}")).space
                      .parameters["op4"], IntRange)
    assert space.parameters["op1"] == "nor_conv_3x3"


@pytest.mark.parametrize(("old", "new", "where", "fragment"), [
    ("op3: {choices: [none, skip_connect]}", "op3: {choices: [none, skip_conect]}",
     "parameters.op3.choices[1]", "did you mean 'skip_connect'"),
    ("  op5: avg_pool_3x3\n", "", "parameters", "needs parameter 'op5'"),
    ("  op5: avg_pool_3x3\n", "  op5: avg_pool_3x3\n  width: {low: 1, high: 4}\n",
     "parameters.width", "unknown parameter 'width'"),
    ("dataset: cifar10", "dataset: cifar11", "parameters.dataset", "did you mean 'cifar10'"),
    ("evaluator: nasbench201", "evaluator: nasbench", "evaluator", "did you mean 'nasbench201'"),
    ("objectives:", "experts: {clip: {source: tiny-clip}}\nobjectives:", "experts: line",
     "trains no VLM, so `experts` would be ignored"),
    ("objectives:", "search: {early_stopping: {kind: mo_asha, min_steps: 2}}\nobjectives:",
     "search.early_stopping.kind", "reports no intermediate results"),
])
def test_bad_non_vlm_spaces_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str,
                                             new: str, where: str, fragment: str) -> None:
    assert old in CELL
    code, out, err = run_cli(["check", str(write(tmp_path, CELL.replace(old, new, 1)))], capsys)
    assert code == 2 and "Traceback" not in out + err
    matching = [line.strip() for line in err.splitlines()[1:] if line.strip().startswith(where)]
    assert any(fragment in line for line in matching), err


def test_a_vlm_space_refuses_parameters_and_needs_experts(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(write(tmp_path, BASE + "parameters: {op0: none}\n"))], capsys)
    assert code == 2 and "`parameters` is read only by a non-VLM evaluator" in err
    no_experts = "name: t\nobjectives: [{metric: accuracy, direction: maximize}]\n"
    code, _, err = run_cli(["check", str(write(tmp_path, no_experts))], capsys)
    assert code == 2 and "`experts` is missing" in err and "Traceback" not in err


def test_check_summarises_a_non_vlm_space(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["check", str(EXAMPLE)], capsys)
    assert code == 0, err
    assert "space size: 15625" in out and "evaluator: nasbench201" in out
    assert "visual tokens" not in out and "expert subsets" not in out
