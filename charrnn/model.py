"""The character model: embedding -> LSTM/GRU/RNN stack -> linear head. No I/O here.

`forward` runs PyTorch's fused nn.LSTM / nn.GRU / nn.RNN (cuDNN on a GPU): the training path.
`trace` returns, besides, every layer's hidden state, LSTM cell state and gate activations (what
`inspect-cells` shows). Each cell's gate arithmetic is written once, below the model, for torch
tensors and numpy arrays alike: `trace` and the numpy sampler (sample.Stepper) both use it.
The tests hold both to a naive per-step reference (tests/reference.py) and to `forward`.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import ModelConfig

# gate names in the order PyTorch packs them in weight_ih / weight_hh
GATES = {
    "lstm": ("input", "forget", "candidate", "output"),
    "gru": ("reset", "update", "new"),
    "rnn": (),
}

State = tuple[torch.Tensor, ...]  # lstm: (h, c); gru, rnn: (h,); each (layers, B, H)


def blocks(model: str) -> int:
    """How many H-row blocks a layer's weight matrices stack: one per gate (one for an RNN)."""
    return len(GATES[model]) or 1


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
        """(logits (B, T, V), final state, trace), where trace maps "h", "c" (LSTM only) and each
        gate name to a (layers, B, T, H) tensor: the value after every step of every layer.

        A layer at a time: the fused module gives the layer's h for every step, then every gate
        comes from one batched product over all steps, and the LSTM cell state from a blocked
        scan (linear_scan)."""
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
                i, f, g, o = lstm_gates(xw + hw, c.hidden_size, torch.sigmoid, torch.tanh)
                cells = linear_scan(f, i * g, state[1][k])  # c_t = f_t * c_{t-1} + i_t * g_t
                record["c"].append(cells)
                finals_c.append(cells[:, -1])
                values = (i, f, g, o)
            elif c.model == "gru":
                values = gru_gates(xw, hw, c.hidden_size, torch.sigmoid, torch.tanh)
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


def linear_scan(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """x_t = a_t * x_{t-1} + b_t for every t, from x_{-1} = `start`; a and b (B, T, H), start
    (B, H). Not a loop of T steps (a million Python iterations for a long text) but of about
    2 sqrt(T): the steps in blocks of K, every block's own recurrence from 0 run side by side
    (K steps), then the carry from block to block (T / K steps), then one product adds it
    in. Multiplications and additions only, no division: a product of a's that underflows
    is a carry that no longer counts, as it should be."""
    B, T, H = a.shape
    K = max(1, math.isqrt(T))
    n = -(-T // K)
    if n * K != T:  # padded with steps that change nothing (a = 1, b = 0)
        a = torch.cat([a, a.new_ones(B, n * K - T, H)], dim=1)
        b = torch.cat([b, b.new_zeros(B, n * K - T, H)], dim=1)
    a, b = a.reshape(B, n, K, H), b.reshape(B, n, K, H)
    local, through = torch.empty_like(b), torch.empty_like(a)
    x, p = b.new_zeros(B, n, H), a.new_ones(B, n, H)
    for j in range(K):  # within every block at once: from 0, and the product of its a's
        x = torch.addcmul(b[:, :, j], a[:, :, j], x)
        p = p * a[:, :, j]
        local[:, :, j], through[:, :, j] = x, p
    carries = torch.empty_like(x)
    carry = start
    for m in range(n):  # what each block starts from
        carries[:, m] = carry
        carry = torch.addcmul(local[:, m, -1], through[:, m, -1], carry)
    out = torch.addcmul(local, through, carries[:, :, None])
    return out.reshape(B, n * K, H)[:, :T]


# Each cell's arithmetic, once. The arguments are torch tensors or numpy arrays (with the
# matching sigmoid and tanh); the last axis holds the stacked gate blocks, in PyTorch's order.


def lstm_gates(pre, H: int, sigmoid, tanh):
    """(input, forget, candidate, output) from the summed projections x W_ih + h W_hh + b."""
    return (sigmoid(pre[..., :H]), sigmoid(pre[..., H:2 * H]), tanh(pre[..., 2 * H:3 * H]),
            sigmoid(pre[..., 3 * H:]))


def lstm_next(i, f, g, o, c, tanh):
    """(h_t, c_t) from the gates and c_{t-1}."""
    c = f * c + i * g
    return o * tanh(c), c


def gru_gates(xw, hw, H: int, sigmoid, tanh):
    """(reset, update, new) from the input projection and the recurrent one (b_hh included:
    the GRU's reset gate multiplies W_hn h + b_hn)."""
    r = sigmoid(xw[..., :H] + hw[..., :H])
    z = sigmoid(xw[..., H:2 * H] + hw[..., H:2 * H])
    return r, z, tanh(xw[..., 2 * H:] + r * hw[..., 2 * H:])


def gru_next(z, n, h):
    """h_t = (1 - z) n + z h_{t-1}."""
    return n + z * (h - n)


def detach(state: State) -> State:
    return tuple(s.detach() for s in state)
