"""Position ids on tensors: REFERENCE.md's worked example, literally, for every scheme."""

from __future__ import annotations

import pytest
import torch

from search_space.components import POSITIONS
from search_space.cost import groups_cost
from trials.vlm.positions import group_offsets, splice_positions

# text at positions 0-1, then group A (2x3), group B (2x2), then text (two more tokens)
WORKED = {
    "original": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    "share_all": [0, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 4, 5],
    "share_by_row": [0, 1, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7],
    "share_by_row_col": [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 7, 8, 9, 10],
}


@pytest.mark.parametrize("scheme", POSITIONS.names())
def test_reference_worked_example(scheme: str) -> None:
    offsets, used = group_offsets([(2, 3), (2, 2)], scheme)
    # text of 5 tokens: two before the placeholder (index 2), two after it
    ids = splice_positions(torch.tensor([2]), 5, offsets, used)
    assert ids.tolist() == [WORKED[scheme]]


@pytest.mark.parametrize("scheme", POSITIONS.names())
def test_rows_with_the_image_at_different_places(scheme: str) -> None:
    offsets, used = group_offsets([(2, 3), (2, 2)], scheme)
    ids = splice_positions(torch.tensor([2, 0]), 5, offsets, used)
    assert ids[0].tolist() == WORKED[scheme]
    assert ids[1].tolist() == [p - 2 for p in WORKED[scheme][2:]] + [used + 2, used + 3]


@pytest.mark.parametrize("scheme", POSITIONS.names())
def test_positions_used_equal_cost_model(scheme: str) -> None:
    grids = [(4, 4), (1, 6), (3, 5)]
    offsets, used = group_offsets(grids, scheme)
    assert offsets.numel() == sum(h * w for h, w in grids)
    assert used == groups_cost(grids, scheme).positions_used
    assert int(offsets.max()) < used
