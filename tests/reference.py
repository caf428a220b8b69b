"""The naive references the package is held to, as torch-rnn keeps its own in its tests: each
recurrence written out one time step at a time, straight from the equations, sharing no code
with `charrnn`'s own."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.model import GATES, CharRNN, State


def lstm_cell(xw: torch.Tensor, hw: torch.Tensor, c: torch.Tensor):
    """Take the input and recurrent projections (B, 4H) and c_{t-1}; return h_t, c_t, gates."""
    i, f, g, o = (xw + hw).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    return o * torch.tanh(c), c, (i, f, g, o)


def gru_cell(xw: torch.Tensor, hw: torch.Tensor, h: torch.Tensor):
    """Take the input and recurrent projections (B, 3H) and h_{t-1}; return h_t and gates."""
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, (r, z, n)


@torch.no_grad()
def trace(model: CharRNN, x: torch.Tensor, state: State | None = None):
    """What `CharRNN.trace` returns, one time step at a time: (logits (B, T, V), final state,
    {"h", "c" (LSTM), each gate: (layers, B, T, H)})."""
    c = model.config
    B, T = x.shape
    if state is None:
        state = model.init_state(B, x.device)
    gates = GATES[c.model]
    record = {name: [] for name in ("h", "c")[: 2 if c.model == "lstm" else 1] + gates}
    inp = model.embed(x)  # (B, T, E)
    finals = []
    for k in range(c.layers):
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(k)
        xw = F.linear(inp, w_ih, b_ih)  # (B, T, G*H)
        h = state[0][k]
        cell = state[1][k] if c.model == "lstm" else None
        steps = {name: [] for name in record}
        for t in range(T):
            hw = F.linear(h, w_hh, b_hh)  # (B, G*H)
            if c.model == "lstm":
                h, cell, g = lstm_cell(xw[:, t], hw, cell)
            elif c.model == "gru":
                h, g = gru_cell(xw[:, t], hw, h)
            else:
                h, g = torch.tanh(xw[:, t] + hw), ()
            steps["h"].append(h)
            if cell is not None:
                steps["c"].append(cell)
            for name, value in zip(gates, g):
                steps[name].append(value)
        finals.append((h, cell))
        for name, values in steps.items():
            record[name].append(torch.stack(values, dim=1))  # (B, T, H)
        inp = torch.stack(steps["h"], dim=1)
        if k < c.layers - 1:
            inp = F.dropout(inp, c.dropout, model.training)
    logits = model.head(model.drop(inp))
    final: State = (torch.stack([f[0] for f in finals]),)
    if c.model == "lstm":
        final = final + (torch.stack([f[1] for f in finals]),)
    return logits, final, {name: torch.stack(v) for name, v in record.items()}


class FusedStepper:
    """The straightforward sampling path: one call of the fused model per character."""

    def __init__(self, model: CharRNN, state: State):
        self.model, self.state = model, state
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def step(self, i: int) -> np.ndarray:
        logits, self.state = self.model(torch.tensor([[i]], device=self.device), self.state)
        return logits[0, -1].float().cpu().numpy()
