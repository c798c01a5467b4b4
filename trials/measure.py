"""Measure what a model really does, to check the analytic resource model against it.

Generic helpers over callables, shared by the vision and language-model resource tests:

- `count_flops(fn)`: the FLOPs `torch.utils.flop_counter.FlopCounterMode` counts while `fn` runs
  (on the meta device for paper-scale models: nothing is allocated, SDPA takes the math path),
  except that a grouped convolution's weight gradient is counted by its real size (torch's
  table counts it `groups` times over; `search_space.resources.ops.conv2d` counts it right);
- `forward_backward_flops(forward, loss)`: the same, split into the forward and the backward of
  `loss(forward())`;
- `saved_bytes(fn, exclude)`: the bytes autograd saves for backward while `fn` runs, each
  storage counted once, storages shared with `exclude` (the parameters) left out;
- `per_sample_saved_bytes(run, batches)`: `saved_bytes` per extra sample between two batch sizes
  (what one more sample costs; per-batch tensors such as autocast's bf16 weight copies cancel);
- `saved_tensors(fn, exclude, model)`: one record per saved storage, naming the module that
  saved it, to see where the bytes go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

aten = torch.ops.aten


def _prod(shape: Iterable[int]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def _grouped_conv_backward_flop(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int],
                                *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """`convolution_backward` with a grouped convolution's weight gradient at its real size.
    torch's formula ignores `groups` there: it counts a depthwise convolution's weight gradient
    `channels` times over (forward and input gradient are right). Not for transposed ones."""
    transposed, output_mask = args[4], args[7]
    if transposed:
        raise NotImplementedError("transposed convolution backward")
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, list(out_shape[0]), True)
    if output_mask[1]:
        flops += 2 * _prod(grad_out_shape) * _prod(w_shape[1:])  # each output x its weights
    return flops


def _counter(grouped_conv_fix: bool) -> FlopCounterMode:
    mapping = {aten.convolution_backward: _grouped_conv_backward_flop} if grouped_conv_fix else None
    return FlopCounterMode(display=False, custom_mapping=mapping)


def count_flops(fn: Callable[[], Any], grouped_conv_fix: bool = True) -> int:
    """Total FLOPs FlopCounterMode counts while `fn()` runs (forward and any backward in it).
    `grouped_conv_fix`: count grouped convolutions' weight gradients by their real size (False:
    exactly torch's table)."""
    with _counter(grouped_conv_fix) as counter:
        fn()
    return int(counter.get_total_flops())


def forward_backward_flops(forward: Callable[[], Any], loss: Callable[[Any], Tensor],
                           grouped_conv_fix: bool = True) -> tuple[int, int]:
    """(forward, backward) FLOPs of `loss(forward()).backward()`, counted separately."""
    with _counter(grouped_conv_fix) as fwd:
        out = forward()
    with _counter(grouped_conv_fix) as bwd:
        loss(out).backward()
    return int(fwd.get_total_flops()), int(bwd.get_total_flops())


@dataclass(frozen=True)
class Saved:
    """One storage autograd saved: its size, and the first tensor seen on it."""

    nbytes: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    where: str  # the innermost module running when it was first saved ("" outside any)


def _storage_key(t: Tensor) -> int:
    return t.untyped_storage().data_ptr()


def saved_tensors(fn: Callable[[], Any], exclude: Iterable[Tensor] = (),
                  model: nn.Module | None = None) -> list[Saved]:
    """What autograd saves for backward while `fn()` runs: one `Saved` per storage, skipping
    storages shared with `exclude`. With `model`, each record names the module that saved it."""
    skip = {_storage_key(t) for t in exclude}
    seen: dict[int, Saved] = {}
    stack: list[str] = []
    keep: list[Tensor] = []  # every saved tensor stays alive, so no storage is freed and reused

    def pack(t: Tensor) -> Tensor:
        keep.append(t)
        if t.device.type == "meta" or t.untyped_storage().nbytes() == 0:
            return t
        key = _storage_key(t)
        if key not in skip and key not in seen:
            seen[key] = Saved(t.untyped_storage().nbytes(), tuple(t.shape), t.dtype,
                              stack[-1] if stack else "")
        return t

    handles = _track_modules(model, stack) if model is not None else []
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    finally:
        for handle in handles:
            handle.remove()
    return list(seen.values())


def _track_modules(model: nn.Module, stack: list[str]) -> list[Any]:
    def enter(name: str) -> Callable[..., None]:
        return lambda *_: stack.append(name)

    def leave(*_: Any) -> None:
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave))
    return handles


def saved_bytes(fn: Callable[[], Any], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes autograd saves for backward while `fn()` runs, each storage once, `exclude` skipped."""
    return sum(s.nbytes for s in saved_tensors(fn, exclude))


def per_sample_saved_bytes(run: Callable[[int], Any], exclude: Iterable[Tensor] = (),
                           batches: tuple[int, int] = (2, 4)) -> float:
    """Saved bytes per sample: `run(batch)` at two batch sizes, the difference per extra sample.
    Two sizes above 1, since some layouts are views at batch 1 and copies above it."""
    params = list(exclude)
    low, high = (saved_bytes(lambda b=b: run(b), params) for b in batches)
    return (high - low) / (batches[1] - batches[0])
