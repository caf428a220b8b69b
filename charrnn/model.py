"""The character model: embedding -> LSTM/GRU/RNN stack -> linear head. No I/O here.

Two paths share one set of weights:
- `forward` runs PyTorch's fused nn.LSTM / nn.GRU / nn.RNN (cuDNN on a GPU): the training path.
- `trace` runs the same recurrences one time step at a time, written out below, and returns every
  layer's hidden state, LSTM cell state and gate activations: the reference for what a cell does.
- `trace_fast` returns the same, a layer at a time (what `inspect-cells` runs on long texts).
Tests hold all three to 1e-5 of each other.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import LIMITS, MODELS, ModelConfig  # noqa: F401 - re-exported

# gate names in the order PyTorch packs them in weight_ih / weight_hh
GATES = {
    "lstm": ("input", "forget", "candidate", "output"),
    "gru": ("reset", "update", "new"),
    "rnn": (),
}

State = tuple[torch.Tensor, ...]  # lstm: (h, c); gru, rnn: (h,); each (layers, B, H)


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding_size)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.model]
        self.rnn = kind(c.embedding_size, c.hidden_size, num_layers=c.layers,
                        dropout=c.dropout if c.layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)
        if c.model == "lstm":
            # forget-gate bias 1: cells remember by default early in training (Jozefowicz 2015)
            with torch.no_grad():
                for k in range(c.layers):
                    getattr(self.rnn, f"bias_ih_l{k}")[c.hidden_size: 2 * c.hidden_size] = 1.0
                    getattr(self.rnn, f"bias_hh_l{k}")[c.hidden_size: 2 * c.hidden_size] = 0.0

    def init_state(self, batch: int, device=None) -> State:
        c = self.config
        zeros = lambda: torch.zeros(c.layers, batch, c.hidden_size, device=device)  # noqa: E731
        return (zeros(), zeros()) if c.model == "lstm" else (zeros(),)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """x (B, T) ids -> logits (B, T, V) and the state after the last step."""
        emb = self.embed(x)  # (B, T, E)
        if self.config.model == "lstm":
            out, (h, c) = self.rnn(emb, state)
            new: State = (h, c)
        else:
            out, h = self.rnn(emb, None if state is None else state[0])
            new = (h,)
        return self.head(self.drop(out)), new  # (B, T, V)

    # -----------------------------------------------------------------------------------------
    # The per-step path

    def layer_weights(self, k: int):
        r = self.rnn
        return (getattr(r, f"weight_ih_l{k}"), getattr(r, f"weight_hh_l{k}"),
                getattr(r, f"bias_ih_l{k}"), getattr(r, f"bias_hh_l{k}"))

    def trace(self, x: torch.Tensor, state: State | None = None):
        """The fused path's recurrences, written out one time step at a time.

        Returns (logits (B, T, V), final state, trace) where trace maps "h", "c" (LSTM only) and
        each gate name to a (layers, B, T, H) tensor: the value after every step of every layer.
        """
        c = self.config
        B, T = x.shape
        if state is None:
            state = self.init_state(B, x.device)
        gates = GATES[c.model]
        record = {name: [] for name in ("h", "c")[: 2 if c.model == "lstm" else 1] + gates}
        inp = self.embed(x)  # (B, T, E)
        finals = []
        for k in range(c.layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            xw = F.linear(inp, w_ih, b_ih)  # (B, T, G*H): the input part of every step at once
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
                inp = F.dropout(inp, c.dropout, self.training)
        logits = self.head(self.drop(inp))
        final: State = (torch.stack([f[0] for f in finals]),)
        if c.model == "lstm":
            final = final + (torch.stack([f[1] for f in finals]),)
        return logits, final, {name: torch.stack(v) for name, v in record.items()}

    def trace_fast(self, x: torch.Tensor, state: State | None = None):
        """What `trace` returns, computed a layer at a time: the fused module gives each layer's
        h for every step, then every gate comes from one batched product over all steps, and
        only the LSTM cell state needs a loop (two elementwise ops a step). For long texts."""
        c = self.config
        B, T = x.shape
        if state is None:
            state = self.init_state(B, x.device)
        kind = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[c.model]
        gates = GATES[c.model]
        record = {name: [] for name in ("h", "c")[: 2 if c.model == "lstm" else 1] + gates}
        inp = self.embed(x)  # (B, T, E)
        finals_h, finals_c = [], []
        for k in range(c.layers):
            w_ih, w_hh, b_ih, b_hh = self.layer_weights(k)
            single = kind(inp.shape[-1], c.hidden_size, batch_first=True).to(x.device)
            params = {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih,
                      "bias_hh_l0": b_hh}
            h0 = state[0][k: k + 1]
            hx = (h0, state[1][k: k + 1]) if c.model == "lstm" else h0
            with warnings.catch_warnings():  # cuDNN would like the weights in one block
                warnings.filterwarnings("ignore", message=".*contiguous chunk of memory")
                h_seq, _ = torch.func.functional_call(single, params, (inp, hx))  # (B, T, H)
            h_prev = torch.cat([h0.transpose(0, 1), h_seq[:, :-1]], dim=1)  # (B, T, H)
            xw = F.linear(inp, w_ih, b_ih)  # (B, T, G*H)
            hw = F.linear(h_prev, w_hh, b_hh)
            if c.model == "lstm":
                i, f, g, o = (xw + hw).chunk(4, dim=-1)
                i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
                ig = i * g
                cells = torch.empty_like(ig)
                cell = state[1][k]
                for t in range(T):  # c_t = f_t * c_{t-1} + i_t * g_t
                    cell = torch.addcmul(ig[:, t], f[:, t], cell)
                    cells[:, t] = cell
                record["c"].append(cells)
                finals_c.append(cell)
                values = (i, f, g, o)
            elif c.model == "gru":
                x_r, x_z, x_n = xw.chunk(3, dim=-1)
                h_r, h_z, h_n = hw.chunk(3, dim=-1)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                values = (r, z, torch.tanh(x_n + r * h_n))
            else:
                values = ()
            record["h"].append(h_seq)
            for name, value in zip(gates, values):
                record[name].append(value)
            finals_h.append(h_seq[:, -1])
            inp = h_seq
            if k < c.layers - 1:
                inp = F.dropout(inp, c.dropout, self.training)
        logits = self.head(self.drop(inp))
        final: State = (torch.stack(finals_h),)
        if c.model == "lstm":
            final = final + (torch.stack(finals_c),)
        return logits, final, {name: torch.stack(v) for name, v in record.items()}


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


def detach(state: State) -> State:
    return tuple(s.detach() for s in state)
