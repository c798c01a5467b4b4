"""The resource model's units: FLOPs of the operations `torch.utils.flop_counter` counts
(matrix products, convolutions, attention), split into forward and the two halves of backward.

Every formula counts what `FlopCounterMode` reports for the same module: a multiply-add is two
FLOPs; elementwise work, norms and softmax are not counted; attention is counted over the whole
score matrix (causal or not) and its backward as the fused kernels' five products (one of them
recomputes the scores; on the meta device and in the math kernel there is no recompute, so
`attention(..., recompute=False)` counts four).
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "bf16": 2}


@dataclass(frozen=True)
class Work:
    """FLOPs of one module on one sample."""

    forward: int = 0
    input_grad: int = 0   # backward FLOPs that carry the gradient to the module's input
    weight_grad: int = 0  # backward FLOPs of the gradients of its own weights

    def __add__(self, other: Work) -> Work:
        return Work(self.forward + other.forward, self.input_grad + other.input_grad,
                    self.weight_grad + other.weight_grad)

    def __mul__(self, k: int) -> Work:
        return Work(self.forward * k, self.input_grad * k, self.weight_grad * k)

    __rmul__ = __mul__

    def backward(self, weights_train: bool, input_needs_grad: bool) -> int:
        """Backward FLOPs autograd spends: weight gradients only for weights that train, input
        gradients only when something before the module needs them."""
        return self.weight_grad * weights_train + self.input_grad * input_needs_grad


ZERO = Work()


def linear(tokens: int, in_features: int, out_features: int) -> Work:
    """`nn.Linear` on `tokens` rows: forward, grad-input and grad-weight are one product each."""
    flops = 2 * tokens * in_features * out_features
    return Work(flops, flops, flops)


def lora(tokens: int, in_features: int, out_features: int, rank: int) -> Work:
    """PEFT's LoRA branch of one linear layer (A: in -> r, then B: r -> out); its weights train.
    The product into B's input is always needed (A trains), so it is weight-side work."""
    a, b = linear(tokens, in_features, rank), linear(tokens, rank, out_features)
    return Work(a.forward + b.forward, a.input_grad, a.weight_grad + b.weight_grad + b.input_grad)


def attention(batch_heads: int, q_len: int, k_len: int, head_dim: int,
              v_dim: int | None = None, recompute: bool = True) -> Work:
    """Scaled dot-product attention (no weights): QK^T and AV forward; backward takes gradients
    to the scores, V, Q and K (four products), plus the fused kernels' recomputed scores."""
    v = head_dim if v_dim is None else v_dim
    qk = 2 * batch_heads * q_len * k_len * head_dim
    av = 2 * batch_heads * q_len * k_len * v
    return Work(qk + av, 2 * qk + 2 * av + qk * recompute, 0)


def conv2d(out_h: int, out_w: int, in_channels: int, out_channels: int, kernel: int | tuple[int, int],
           groups: int = 1) -> Work:
    """`nn.Conv2d`: forward, grad-input and grad-weight are one convolution's worth each.
    (FlopCounterMode's table counts a grouped convolution's weight gradient as if it were not
    grouped, `groups` times over; the tests count it by its real size, see tests/search_space/
    measure.py.)"""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    flops = 2 * out_h * out_w * out_channels * (in_channels // groups) * kh * kw
    return Work(flops, flops, flops)


@dataclass(frozen=True)
class PartCost:
    params: int        # all parameters of the part (exact)
    trainable: int     # of which train in this mode (exact)
    forward: int       # FLOPs of one sample's forward (one image)
    backward: int      # FLOPs of its backward in this mode (0 when frozen)
    activations: int   # bytes saved for backward of one sample (0 when frozen)
