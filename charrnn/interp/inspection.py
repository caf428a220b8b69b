"""Cell inspection: run a text through the per-step path once, then answer questions about it.

Every view (a cell's heatmap, the probe rankings, gate saturation, surprisal, the HTML page)
reads the same arrays, computed once per command in one batched pass of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data import corpus
from charrnn.errors import CharrnnError
from charrnn.fileio import read_text
from charrnn.model import GATES, CharRNN
from charrnn.sample import check_prime, generate
from charrnn.vocab import Vocab

SIGMOID_GATES = {"input", "forget", "output", "reset", "update"}
SATURATION = (0.1, 0.9)  # the paper's thresholds for a left- or right-saturated gate


def states_of(model: str) -> tuple[str, ...]:
    """The --state names a model offers: cell state c (LSTM), hidden state h, then its gates."""
    return (("c",) if model == "lstm" else ()) + ("h",) + GATES[model]


def default_state(model: str) -> str:
    return "c" if model == "lstm" else "h"


def state_label(state: str) -> str:
    return {"c": "tanh(c), cell state", "h": "h, hidden state"}.get(state, f"{state} gate")


def value_range(state: str) -> tuple[float, float]:
    return (0.0, 1.0) if state in SIGMOID_GATES else (-1.0, 1.0)


@dataclass
class Inspection:
    """A text and everything the model did on it."""

    text: str
    vocab: Vocab
    model: str  # lstm | gru | rnn
    states: dict[str, np.ndarray]  # name -> (layers, N, H); "c" is stored as tanh(c)
    next_probs: np.ndarray  # (N, V): the distribution over the character after each position
    ablation: tuple[str, np.ndarray] | None = None  # (--ablate, loss rise at 1 .. N - 1)
    matching: Inspection | None = None  # the --match phrase's own inspection
    feature: tuple[str, np.ndarray] | None = None  # (--feature's title, its activations)

    @property
    def layers(self) -> int:
        return self.states["h"].shape[0]

    @property
    def hidden_size(self) -> int:
        return self.states["h"].shape[2]

    def check(self, state: str, layer: int | None = None, cells: list[int] | None = None):
        if state not in self.states:
            raise CharrnnError(f"unknown --state {state!r} for a {self.model} model; choose "
                               f"from {', '.join(states_of(self.model))}")
        if layer is not None and not 1 <= layer <= self.layers:
            raise CharrnnError(f"--layer {layer} does not exist: the model has layers 1 to "
                               f"{self.layers}")
        for cell in cells or []:
            if not 0 <= cell < self.hidden_size:
                raise CharrnnError(f"--cells {cell} does not exist: cells are numbered 0 to "
                                   f"{self.hidden_size - 1}")

    def values(self, state: str, layer: int, cell: int) -> np.ndarray:
        """Activations of one cell over the text; layer is 1-based as people say it."""
        return self.states[state][layer - 1, :, cell]

    def columns(self, state: str) -> np.ndarray:
        """(N, layers * H): every cell of every layer, column k = layer k // H + 1, cell k % H."""
        s = self.states[state]
        return s.transpose(1, 0, 2).reshape(s.shape[1], -1)

    def most_active(self, state: str, top: int, layer: int | None = None) -> list[tuple[int, int]]:
        """(layer, cell) of the cells whose activation varies most over the text."""
        spread = self.states[state].std(axis=1)  # (layers, H)
        if layer:
            spread = np.where(np.arange(self.layers)[:, None] == layer - 1, spread, -1.0)
        best = np.argsort(-spread, axis=None, kind="stable")[:top]
        return [(int(i) // self.hidden_size + 1, int(i) % self.hidden_size) for i in best]

    def surprisal(self) -> tuple[np.ndarray, float]:
        """p of each character given the text before it (NaN for the first), and bits/char."""
        ids = np.asarray(self.vocab.encode(self.text), dtype=np.int64)
        p = np.full(len(ids), np.nan)
        p[1:] = self.next_probs[np.arange(len(ids) - 1), ids[1:]]
        bits = float(-np.log2(np.maximum(p[1:], 1e-12)).mean()) if len(ids) > 1 else float("nan")
        return p, bits

    def gate_saturation(self) -> list[tuple[int, str, float, float]]:
        """(layer, gate, fraction below 0.1, fraction above 0.9) for each sigmoid gate."""
        lo, hi = SATURATION
        rows = []
        for gate in GATES[self.model]:
            if gate in SIGMOID_GATES:
                for k in range(self.layers):
                    g = self.states[gate][k]
                    rows.append((k + 1, gate, float((g < lo).mean()), float((g > hi).mean())))
        return rows

    def top_predictions(self, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probabilities), each (N, k): the likeliest characters after each position."""
        k = min(k, self.next_probs.shape[1])
        order = np.argsort(-self.next_probs, axis=1)[:, :k]
        return order, np.take_along_axis(self.next_probs, order, axis=1)


def run_corpus(config: dict) -> corpus.Corpus:
    """The text a run was trained on, if it is here and is that text."""
    info, train_cfg = config.get("corpus", {}), config.get("train", {})
    path, digest = info.get("path"), info.get("digest")
    # a run may come from someone else: the path in its config is opened only if the file
    # there is the text the run was trained on, never any other file of this machine's
    if not isinstance(path, str) or not isinstance(digest, str) or not Path(path).is_file():
        raise CharrnnError(f"the run's corpus {path} is not here; pass --text FILE or --prime "
                           "TEXT")
    try:
        return corpus.load(path, train_cfg.get("encoding", "utf-8"),
                            train_cfg.get("errors", "strict"), digest=digest,
                            characters=info.get("characters"))
    except corpus.DigestMismatch:
        raise CharrnnError(f"the file at the run's corpus path {path} is not the text it was "
                           "trained on; pass --text FILE or --prime TEXT") from None


def check_stretch(length: int, offset: int, prime: str | None) -> None:
    """The stretch of text asked for makes sense (checked before a model is loaded)."""
    if length < 2 and prime is None:
        raise CharrnnError(f"--length must be 2 or more, not {length}")
    if offset < 0:
        raise CharrnnError(f"--offset must be 0 or more, not {offset}")


def text_to_inspect(model: CharRNN, vocab: Vocab, config: dict, text_file: Path | None,
                    prime: str | None, length: int, offset: int, drawing: SampleConfig,
                    max_memory: int | None = None) -> str:
    """The --text file, the --prime and its continuation, or the run's validation text (a
    continuation longer than `max_memory` allows is refused before it is generated)."""
    if text_file is not None and prime is not None:
        raise CharrnnError("give --text or --prime, not both")
    if text_file is not None:
        # no more than is shown is held: what comes before --offset is read past
        source, _ = read_text(text_file, "--text", length, skip=offset)
        if offset and len(source) < 2:
            raise CharrnnError(f"--offset {offset} is past the end of --text {text_file}")
        return source
    if prime is not None:
        prime = check_prime(prime, vocab, drop_unknown=False)
        if max_memory is not None:
            check_memory(model.config, len(prime) + length, max_memory)
        g = torch.Generator().manual_seed(drawing.seed if drawing.seed is not None else 0)
        return prime + "".join(generate(model, vocab, prime, drawing, g))
    c = run_corpus(config)
    _, val = c.split(config.get("train", {}))
    if offset >= len(val) - 1:
        raise CharrnnError(f"--offset {offset} is past the end of the validation text "
                           f"({len(val):,} characters)")
    return c.vocab.decode(val[offset: offset + length])


def bytes_per_character(mc: ModelConfig) -> int:
    """Memory an inspection needs for each character: every recorded state of every cell in
    float32, about three times over at the peak (the pass, its copy, the views), and the
    distribution over the next character. 2x192 LSTM: 29 KB (measured: 26 KB)."""
    recorded = (2 if mc.model == "lstm" else 1) + len(GATES[mc.model])
    return 3 * 4 * mc.layers * mc.hidden_size * recorded + 24 * mc.vocab_size


def check_memory(mc: ModelConfig, chars: int, limit: int) -> None:
    need = chars * bytes_per_character(mc)
    if need > limit:
        most = limit // bytes_per_character(mc)
        unit, name = (2**30, "G") if need >= 2**30 else (2**20, "M")
        raise CharrnnError(
            f"inspecting {chars:,} characters with this {mc.layers}x{mc.hidden_size} "
            f"{mc.model} needs about {need / unit:.1f} {name}B of memory, more than "
            f"--max-memory ({limit / unit:.1f} {name}B); inspect at most {most:,} characters "
            f"(--length), or raise the limit with --max-memory {math.ceil(need / unit)}{name}")


@torch.no_grad()
def inspect(model: CharRNN, vocab: Vocab, text: str) -> Inspection:
    """Run `text` through the model once and keep every state of every layer."""
    if len(text) < 2:
        raise CharrnnError("the text to inspect needs at least 2 characters")
    problem = vocab.describe_unknown(text)
    if problem is not None:
        raise CharrnnError(f"the text has {problem}; inspect a text made of the run's "
                           "characters")
    model.eval()
    device = next(model.parameters()).device
    ids = torch.from_numpy(vocab.encode(text).astype(np.int64)).to(device)[None]  # (1, N)
    logits, _, trace = model.trace(ids)
    states = {name: v[:, 0].float().cpu().numpy() for name, v in trace.items()}  # (L, N, H)
    if "c" in states:
        states["c"] = np.tanh(states["c"])
    probs = torch.softmax(logits[0].double(), dim=-1).cpu().numpy()  # (N, V)
    return Inspection(text, vocab, model.config.model, states, probs)
