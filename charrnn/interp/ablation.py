"""Which cells matter: run a text with some cells held at their mean and see where the loss
rises. Correlation says a cell follows a feature; ablation says the model uses it.

A held cell keeps its mean value (over the text, unablated) at every step, in its state (c and
h of an LSTM, h otherwise), so nothing it would have carried reaches later steps or layers.
The recurrence runs one step at a time here (a held cell changes every later step), with the
cell arithmetic of charrnn/model.py.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, gru_gates, gru_next, lstm_gates, lstm_next
from charrnn.vocab import Vocab


@torch.no_grad()
def losses(model: CharRNN, ids: torch.Tensor, held: dict[int, list[int]] | None = None,
           means: dict[str, torch.Tensor] | None = None) -> np.ndarray:
    """-log p(ids[i] | ids[:i]) for i = 1 .. N - 1, with the cells in `held` (layer index ->
    cells) pinned at `means` ("h", "c": (layers, H))."""
    c = model.config
    H = c.hidden_size
    x = model.embed(ids)  # (N, E)
    for k in range(c.layers):
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(k)
        xw = F.linear(x, w_ih, b_ih)  # (N, G*H)
        h = torch.zeros(H, device=ids.device)
        cell = torch.zeros(H, device=ids.device)
        pinned = torch.tensor((held or {}).get(k, []), dtype=torch.long, device=ids.device)
        out = []
        for t in range(len(ids)):
            hw = F.linear(h, w_hh, b_hh)
            if c.model == "lstm":
                i, f, g, o = lstm_gates(xw[t] + hw, H, torch.sigmoid, torch.tanh)
                h, cell = lstm_next(i, f, g, o, cell, torch.tanh)
            elif c.model == "gru":
                _, z, n = gru_gates(xw[t], hw, H, torch.sigmoid, torch.tanh)
                h = gru_next(z, n, h)
            else:
                h = torch.tanh(xw[t] + hw)
            if len(pinned):
                h = h.index_copy(0, pinned, means["h"][k, pinned])
                if c.model == "lstm":
                    cell = cell.index_copy(0, pinned, means["c"][k, pinned])
            out.append(h)
        x = torch.stack(out)
    logp = torch.log_softmax(model.head(x).double(), dim=-1)
    return -logp[:-1].gather(1, ids[1:, None])[:, 0].cpu().numpy()


def parse(text: str, layers: int, hidden: int) -> dict[int, list[int]]:
    """'1:10,2:5' -> {0: [10], 1: [5]} (layers counted from 1, as people say them)."""
    held: dict[int, list[int]] = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            layer, cell = (int(v) for v in part.split(":"))
        except ValueError:
            raise CharrnnError(f"--ablate {text!r} is not a list of LAYER:CELL like 1:10,2:5") \
                from None
        if not 1 <= layer <= layers or not 0 <= cell < hidden:
            raise CharrnnError(f"--ablate {part}: the model has layers 1 to {layers} and cells "
                               f"0 to {hidden - 1}")
        held.setdefault(layer - 1, []).append(cell)
    if not held:
        raise CharrnnError("--ablate names no cells; write them like 1:10,2:5")
    return held


@torch.no_grad()
def ablate(model: CharRNN, vocab: Vocab, text: str, held: dict[int, list[int]]) -> np.ndarray:
    """How much the loss of each predicted character (1 .. N - 1) rises, in nats, when the cells
    in `held` are pinned at their mean over `text`."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.from_numpy(vocab.encode(text).astype(np.int64)).to(device)
    _, _, trace = model.trace(ids[None])
    means = {name: trace[name][:, 0].mean(dim=1) for name in ("h", "c") if name in trace}
    return losses(model, ids, held, means) - losses(model, ids)
