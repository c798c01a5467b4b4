"""Fixtures for the `trials` tests: a small shared uint8 image batch, one torch thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run faster on one thread; several threads fight over a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def images() -> torch.Tensor:
    """Two random RGB images, uint8 (B, 3, H, W), at a size no expert uses natively."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 3, 72, 72), dtype=torch.uint8, generator=generator)
