"""The int8 decoder: int8 weights, and each input row quantized on its own.

torch's dynamic quantization (`quantize_dynamic`) picks one activation scale per call from the
whole input tensor. In a served batch the rows are other clients' beams, so a neighbour with large
activations coarsens everyone's quantization and a caption changes with the company it is decoded
in (issue 30: "a yellow triangle below a yellow circle" alone, another caption in a batch).

Here every row x is first mapped onto [0, 1] by its own minimum and span,

    x = lo + span * u,   u = (x - lo) / span,   so   W x + b = span * (W u) + lo * (W 1) + b

and W u goes through the same int8 kernel (`quantized::linear_dynamic`). Every non-constant row
now has its minimum exactly at 0 and its maximum exactly at 1 (a float divided by itself), so the
kernel's per-tensor range is [0, 1] whatever the batch holds: one fixed activation scale, integer
accumulation (exact, in any order), and the same per-element dequantisation. A row's result is
bit for bit the same alone or in any batch. A constant row (span 0) becomes u = 0, which every
scale maps to the zero point exactly. The per-row scale is also finer than the batch's, so the
int8 decoder is at least as close to fp32 as before (benchmarks/RESULTS.md, issue 30).

Runs on the runtime image's torch 2.1 as on training's (tests/test_runtime_compat.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class RowInt8Linear(nn.Module):
    """nn.Linear with int8 weights (symmetric, one scale per output channel) and each input row
    (the last dimension) quantized by its own range. Inference only."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        # newer torch deprecates quantized tensors; the runtime's torch 2.1 has nothing else
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(
                weight, scale.double(), torch.zeros(len(weight), dtype=torch.long), 0, torch.qint8
            )
        self.packed = torch.ops.quantized.linear_prepack(qweight, None)
        # W 1 of the weights the kernel really multiplies with
        self.register_buffer("weight_row_sum", qweight.dequantize().sum(dim=1))
        self.register_buffer(
            "bias", torch.zeros(len(weight)) if bias is None else bias.detach().float().clone()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.aminmax(x, dim=-1, keepdim=True)
        span = hi - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        unit = (x - lo) / span
        # reduce_range: 7-bit activations, as quantize_dynamic uses on x86 (no int16 saturation
        # in the AVX2 kernels)
        product = torch.ops.quantized.linear_dynamic(unit, self.packed, True)
        return torch.addcmul(torch.addcmul(self.bias, lo, self.weight_row_sum), product, span)


class RowInt8LSTMCell(nn.Module):
    """nn.LSTMCell over two RowInt8Linear (input and hidden state quantized apart, as
    quantize_dynamic does); gate order i, f, g, o as torch's."""

    def __init__(self, cell: nn.LSTMCell) -> None:
        super().__init__()
        self.input_gates = RowInt8Linear(cell.weight_ih, cell.bias_ih + cell.bias_hh)
        self.hidden_gates = RowInt8Linear(cell.weight_hh, None)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = (self.input_gates(x) + self.hidden_gates(h)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


def quantize_rows(module: nn.Module) -> nn.Module:
    """Replace every nn.Linear and nn.LSTMCell inside `module` (in place) by its row-quantized
    int8 twin; returns `module`."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, RowInt8Linear(child.weight, child.bias))
        elif isinstance(child, nn.LSTMCell):
            setattr(module, name, RowInt8LSTMCell(child))
        else:
            quantize_rows(child)
    return module
