"""A training split's text, a batch at a time: each record's conversation encoded in the LM's
chat format when a batch first needs it (kept as ids afterwards), cut to the sequence budget,
and padded into one batch with the text-only rows marked."""

from __future__ import annotations

import torch
from torch import Tensor

from trials.data.base import ChatDataset
from trials.vlm.chat import IGNORE, Encoded
from trials.vlm.model import VLM


def text_budget(vlm: VLM, max_length: int | None, visual_tokens: int) -> int:
    """Text tokens a sequence may hold: the budget (data.max_length, else the LM's
    max_position_embeddings) less the visual tokens replacing the `<image>` placeholder."""
    total = max_length or int(getattr(vlm.lm.config, "max_position_embeddings", 0) or 0) or None
    if total is None:
        return 1 << 30
    budget = total - visual_tokens + 1
    if budget < 2:
        raise ValueError(f"a sequence of {total} tokens cannot hold {visual_tokens} visual tokens and "
                         "any text; raise data.max_length or use fewer visual tokens")
    return budget


class Conversations:
    """The records of `data`, tokenized on first use; `truncated`: records cut so far."""

    def __init__(self, data: ChatDataset, vlm: VLM, budget: int) -> None:
        self.data, self.vlm, self.budget = data, vlm, budget
        self._rows: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return len(self.data)

    def row(self, i: int) -> Encoded:
        if i not in self._rows:
            self._rows[i] = self.vlm.chat.encode(self.data.turns[i], bool(self.data.has_image[i]),
                                                 self.budget)
        return self._rows[i]

    @property
    def truncated(self) -> int:
        return sum(row.truncated for row in self._rows.values())

    def answer_tokens(self, idx: Tensor) -> int:
        """Labelled tokens of the records `idx` (what their loss is averaged over)."""
        return sum(sum(label != IGNORE for label in self.row(int(i)).labels) for i in idx.tolist())

    def batch(self, idx: Tensor, device: torch.device) -> dict[str, Tensor]:
        """Records `idx` padded to their longest: input_ids, attention_mask, labels, has_image."""
        positions = [int(i) for i in idx.tolist()]
        return self.vlm.pad_rows([self.row(i) for i in positions], device,
                                 [bool(self.data.has_image[i]) for i in positions])
