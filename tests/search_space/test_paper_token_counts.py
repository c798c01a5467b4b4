"""The papers' configurations (examples/papers/*.yaml) through `vlmsearch check --json`: the
visual tokens and LM positions each paper reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from search_space import compile_space, parse, point_cost
from vlmsearch.cli import app

PAPERS = Path(__file__).resolve().parents[2] / "examples" / "papers"


def check(path: Path) -> dict[str, object]:
    result = CliRunner().invoke(app, ["check", str(path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["problems"] == []
    return data


def cost(text: str) -> tuple[int, int]:
    """(visual_tokens, positions_used) of a point, as `check` computes them (whether or not
    the point fits its LM's positions)."""
    c = point_cost(compile_space(parse(text).space).only_point())
    return c.visual_tokens, c.positions_used


def test_llava_1_5_sees_576_tokens() -> None:
    data = check(PAPERS / "llava-1.5.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (576, 576)


def test_mousi_as_written_shares_positions_by_row() -> None:
    data = check(PAPERS / "mousi.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (5696, 24 + 32 + 64)


@pytest.mark.parametrize(("scheme", "sam", "all_three"), [
    ("original", 4096, 576 + 1024 + 4096), ("share_by_row", 64, 24 + 32 + 64), ("share_all", 1, 3)])
def test_mousi_sam_4096_tokens_on_4096_64_or_1_positions(scheme: str, sam: int, all_three: int) -> None:
    """MouSi: SAM's 64x64 neck map takes 4096 positions, 64 shared by row, 1 shared by all; the
    paper's three experts (CLIP 24x24, DINOv2 32x32, SAM 64x64) 5696 tokens in every scheme."""
    text = (PAPERS / "mousi.yaml").read_text().replace("positions: share_by_row", f"positions: {scheme}")
    assert f"positions: {scheme}" in text and "layers: neck" in text
    assert cost(text) == (5696, all_three)
    for expert in ("  clip: {source: openai/clip-vit-large-patch14-336, layers: -2}\n",
                   "  dinov2: {source: facebook/dinov2-large, image_size: 448, layers: -1}\n"):
        assert expert in text
        text = text.replace(expert, "")
    assert cost(text) == (4096, sam)


def test_mousi_sam_with_original_positions_is_refused_by_check(tmp_path: Path) -> None:
    """4096 positions for SAM alone leave none of Vicuna's 4096 for the text: check says so."""
    path = tmp_path / "mousi.yaml"
    path.write_text((PAPERS / "mousi.yaml").read_text().replace("positions: share_by_row",
                                                                "positions: original"))
    result = CliRunner().invoke(app, ["check", str(path)], catch_exceptions=False)
    assert result.exit_code == 2 and "max_position_embeddings (4096)" in result.output


def test_eagle_channel_concat_on_1024_tokens() -> None:
    data = check(PAPERS / "eagle.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (1024, 1024)


def test_leo_512_tokens_per_tile() -> None:
    """InternViT 32x32x1024 and SAM-L's neck 64x64x256, each pixel-unshuffled to 16x16x4096,
    interleaved: 2 x 256 = 512 tokens a tile; LEO's dynamic tiling (max 6 tiles of 448 px and a
    thumbnail, Mozhgan91/LEO d2787c6 leo_8b_full.sh / dataset.py) cuts the 1024 px square into
    2 x 2 tiles + the thumbnail: 5 x 512 tokens, one interleaved 16x32 group each."""
    data = check(PAPERS / "leo.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (5 * 512, 5 * 512)
    text = (PAPERS / "leo.yaml").read_text()
    assert text.count("tiling: {max_tiles: 6, tile_size: 448, thumbnail: true}") == 2
    assert point_cost(compile_space(parse(text).space).only_point()).groups == ((16, 32),) * 5
    assert cost(text.replace("image_size: 1024}", "image_size: 448}")) == (512, 512)  # one tile, no thumbnail
    untiled = text.replace(",\n              tiling: {max_tiles: 6, tile_size: 448, thumbnail: true}", "")
    untiled = untiled.replace(",\n        tiling: {max_tiles: 6, tile_size: 448, thumbnail: true}", "")
    assert "tiling" not in untiled.split("experts:")[1] and cost(untiled) == (512, 512)


def test_cambrian_576_queries_and_24_newlines() -> None:
    """Cambrian-1's SVA: a 24x24 query grid, an image_newline token after each row (one group
    on a 24x25 grid, the newlines its last column)."""
    data = check(PAPERS / "cambrian.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (576 + 24, 576 + 24)


@pytest.mark.parametrize(("paper", "tokens"), [
    ("mini-gemini", 576),  # the CLIP-L/336 queries' grid; ConvNeXt's stages mined in 8x8 windows
    ("llava-hr", 1024),    # CLIP-L at 448 px (LLaVA-HR's 1024/32*14): 32x32, the adapters inside
])
def test_injection_operators_keep_the_primary_grid(paper: str, tokens: int) -> None:
    data = check(PAPERS / f"{paper}.yaml")
    assert (data["visual_tokens"], data["positions_used"]) == (tokens, tokens)
