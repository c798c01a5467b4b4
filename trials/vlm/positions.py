"""LM `position_ids` for text + visual groups under MouSi's schemes (REFERENCE.md table).

The schemes' arithmetic lives in `search_space.components.POSITIONS` and is shared with the
analytic cost model; here it is evaluated on tensors, with no Python loop over tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from search_space import POSITIONS, Grid


def group_offsets(grids: Sequence[Grid], scheme: str) -> tuple[Tensor, int]:
    """Offsets (N,) of every visual token from the image's first position, and positions used.

    Groups follow each other: group k starts where group k-1's positions end.
    """
    rule = POSITIONS.get(scheme)
    parts, start = [], 0
    for h, w in grids:
        rows = torch.arange(h).repeat_interleave(w)  # (h*w,) row of each token, row-major
        cols = torch.arange(w).repeat(h)              # (h*w,)
        parts.append(start + rule.offset(rows, cols, w))
        start += rule.used(h, w)
    return torch.cat(parts).long(), start


def splice_positions(image_at: Tensor, text_len: int, offsets: Tensor, used: int) -> Tensor:
    """Position ids (B, L - 1 + N) for text with one image placeholder replaced by N tokens.

    image_at: (B,) index of the placeholder in each row of the text (length L). Text before it
    keeps positions 0..p-1; visual token i gets p + offsets[i]; text after resumes at p + used.
    """
    n = offsets.numel()
    t = torch.arange(text_len - 1 + n, device=image_at.device)[None, :]  # (1, L')
    p = image_at[:, None]                                                # (B, 1)
    visual = p + offsets.to(image_at.device)[(t - p).clamp(0, n - 1)]    # (B, L')
    after = p + used + (t - p - n)                                       # (B, L')
    return torch.where(t < p, t, torch.where(t < p + n, visual, after))
