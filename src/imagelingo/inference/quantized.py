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

from .decoder import CaptionDecoder


class RowInt8Linear(nn.Module):
    """nn.Linear with int8 weights (symmetric, one scale per output channel) and each input row
    (the last dimension) quantized by its own range. Inference only."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().cpu().float()
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
        bias = torch.zeros(len(weight)) if bias is None else bias.detach().cpu().float().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # two reductions: torch.aminmax is 4-15x slower on these shapes (RESULTS.md, issue 30)
        lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        span = hi - lo
        span = torch.where(span > 0, span, torch.ones_like(span))
        unit = (x - lo) / span
        # reduce_range: 7-bit activations, as quantize_dynamic uses on x86 (no int16 saturation
        # in the AVX2 kernels)
        product = torch.ops.quantized.linear_dynamic(unit, self.packed, True)
        return torch.addcmul(torch.addcmul(self.bias, lo, self.weight_row_sum), product, span)


class RowInt8Decoder(nn.Module):
    """A CaptionDecoder's `init_state` and `step` (what beam_search calls) on RowInt8Linear
    layers. The four layers that read the hidden state h (word scores, attention query, context
    gate, the LSTM's hidden gates) are one int8 product per step, so h is quantized once; the
    state carries their results to the next step, and beam search reorders them with it. Three
    int8 products per step instead of torch's five (RESULTS.md, issue 30). Per-row quantization
    makes the fused product give each layer exactly what it would alone."""

    def __init__(self, decoder: CaptionDecoder) -> None:
        super().__init__()
        c, cell = decoder.config, decoder.lstm
        self.config = c
        self.project = int8(decoder.project[0])  # followed by its ReLU
        self.att_context, self.att_score = int8(decoder.att_context), int8(decoder.att_score)
        self.init_h, self.init_c = int8(decoder.init_h), int8(decoder.init_c)
        self.embed = nn.Embedding.from_pretrained(decoder.embed.weight.detach().cpu().float())
        self.input_gates = RowInt8Linear(cell.weight_ih, cell.bias_ih + cell.bias_hh)
        readers = (decoder.out, decoder.att_hidden, decoder.gate)
        self.read_hidden = RowInt8Linear(
            torch.cat([*(r.weight.cpu() for r in readers), cell.weight_hh.cpu()]),
            torch.cat([*(r.bias.cpu() for r in readers), torch.zeros(4 * c.hidden_dim)]),
        )
        self.splits = [c.vocab_size, c.attention_dim, c.context_dim, 4 * c.hidden_dim]

    def _with_readings(self, h: torch.Tensor, c: torch.Tensor, *rest: torch.Tensor):
        scores, query, gate, hidden_gates = self.read_hidden(h).split(self.splits, dim=1)
        return scores, (h, c, *rest, query, gate, hidden_gates)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        context = torch.relu(self.project(features))
        mean = context.mean(dim=1)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        return self._with_readings(h, c, context, self.att_context(context))[1]

    def step(self, words: torch.Tensor, state: tuple[torch.Tensor, ...]):
        """CaptionDecoder.step: one word in -> (word scores [B, V], next state, attention)."""
        h, c, context, context_att, query, gate, hidden_gates = state
        energy = self.att_score(torch.tanh(context_att + query.unsqueeze(1)))
        alpha = torch.softmax(energy.squeeze(2), dim=1)
        attended = torch.sigmoid(gate) * torch.bmm(alpha.unsqueeze(1), context).squeeze(1)
        x = torch.cat([self.embed(words), attended], dim=1)
        i, f, g, o = (self.input_gates(x) + hidden_gates).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        scores, state = self._with_readings(h, c, context, context_att)
        return scores, state, alpha


def int8(linear: nn.Linear) -> RowInt8Linear:
    return RowInt8Linear(linear.weight, linear.bias)
