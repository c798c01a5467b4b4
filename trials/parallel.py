"""The few collective operations a data-parallel trial needs, and their one-process stand-in.

Each rank trains its share of every effective batch; its loss is divided by the whole batch's
answer-token count, so the gradients summed over ranks equal one process's on the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Single:
    """One process: nothing to exchange."""

    rank, world = 0, 1

    def total(self, count: int) -> int:
        return count

    def any(self, flag: bool) -> bool:
        return flag

    def sum_value(self, value: float) -> float:
        return value

    def sum_grads(self, params: Sequence[nn.Parameter]) -> None:
        return None

    def shard(self, idx: Tensor) -> Tensor:
        return idx


class Distributed(Single):
    """`torch.distributed` ranks (gloo on CPU, nccl on CUDA), already initialised."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist, self.device = dist, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def _reduce(self, value: Tensor, op: object) -> Tensor:
        self.dist.all_reduce(value, op=op)
        return value

    def total(self, count: int) -> int:
        return int(self._reduce(torch.tensor([count], device=self.device), self.dist.ReduceOp.SUM))

    def any(self, flag: bool) -> bool:
        return bool(self._reduce(torch.tensor([int(flag)], device=self.device), self.dist.ReduceOp.MAX))

    def sum_value(self, value: float) -> float:
        return float(self._reduce(torch.tensor([value], device=self.device, dtype=torch.float64),
                                  self.dist.ReduceOp.SUM))

    def sum_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Sum every trainable parameter's gradient over the ranks, in one flat buffer."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        self.dist.all_reduce(flat, op=self.dist.ReduceOp.SUM)
        start = 0
        for param, grad in zip(params, grads, strict=True):
            n = grad.numel()
            param.grad = flat[start:start + n].view_as(grad).to(grad.dtype)
            start += n

    def shard(self, idx: Tensor) -> Tensor:
        """This rank's contiguous share of a batch's indices."""
        per = -(-len(idx) // self.world)
        return idx[self.rank * per:(self.rank + 1) * per]
