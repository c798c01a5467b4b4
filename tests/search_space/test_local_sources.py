"""A relative model directory in `source:` is read against the YAML file's folder (then the
working directory), so `source: experts/colour` works from examples/ and from the repo root;
presets and HF ids, and so their hashes, are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import CLIPVisionConfig

from search_space import load, parse

SPACE = """\
name: anchored
data: {{image_size: 64}}
experts:
  pool:
    mine: {{source: {mine}, tokens: 4}}
    clip: {{source: tiny-clip, tokens: 16}}
    hub: {{source: openai/clip-vit-base-patch32, tokens: 49}}
fusion: {{kind: sequence_concat}}
train: {{steps: 30, lr: 1.0e-3, batch_size: 8}}
objectives: [{{metric: accuracy, direction: maximize}}]
"""


def model_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     image_size=16, patch_size=8).save_pretrained(folder)
    return folder


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp/spaces/space.yaml beside tmp/spaces/experts/mine; the working directory elsewhere."""
    model_dir(tmp_path / "spaces" / "experts" / "mine")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path


def sources(path: Path) -> dict[str, str]:
    pool = load(path).space.experts.pool
    return {name: spec.source for name, spec in pool.items()}


def test_a_directory_beside_the_yaml_is_found_from_any_working_directory(layout: Path) -> None:
    space = layout / "spaces" / "space.yaml"
    space.write_text(SPACE.format(mine="experts/mine"))
    found = sources(space)
    assert found["mine"] == str((layout / "spaces" / "experts" / "mine").resolve())
    assert found["clip"] == "tiny-clip" and found["hub"] == "openai/clip-vit-base-patch32"


def test_the_yaml_folder_wins_and_the_working_directory_is_the_fallback(layout: Path) -> None:
    model_dir(layout / "elsewhere" / "experts" / "mine")   # a same-named one in the cwd
    model_dir(layout / "elsewhere" / "only_here")
    space = layout / "spaces" / "space.yaml"
    space.write_text(SPACE.format(mine="experts/mine"))
    assert sources(space)["mine"] == str((layout / "spaces" / "experts" / "mine").resolve())
    space.write_text(SPACE.format(mine="only_here"))
    assert sources(space)["mine"] == "only_here"  # as before: read against the cwd


def test_choices_of_sources_are_anchored_too(layout: Path) -> None:
    space = layout / "spaces" / "space.yaml"
    space.write_text(SPACE.format(mine="{choices: [experts/mine, tiny-siglip]}"))
    pool = load(space).space.experts.pool
    mine = str((layout / "spaces/experts/mine").resolve())
    assert list(pool["mine"].source.choices) == [mine, "tiny-siglip"]


def test_presets_and_hub_ids_keep_their_hashes_through_load(tmp_path: Path, examples_dir: Path) -> None:
    text = SPACE.format(mine="tiny-sam")
    file = tmp_path / "s.yaml"
    file.write_text(text)
    assert load(file).space == parse(text).space
    comm = examples_dir / "comm.yaml"
    assert load(comm).space == parse(comm.read_text()).space
