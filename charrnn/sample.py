"""Sampling: feed a prime, then draw one character at a time and hand it out as soon as it exists.

The prime goes through the fused model; then `Stepper` runs the model's recurrences one
character at a time in numpy on the CPU. At batch 1 a fused module spends most of its time in
fixed per-call costs; here the first layer's input projection is a table lookup (embedding @
W_ih folded ahead of time) and each step is a few matrix-vector products and the cell
arithmetic of charrnn/model.py. The draw is separate from the step: the distribution is
computed in float64 by one function, and the uniform numbers come from a seeded
torch.Generator, drawn in blocks, so the same seed gives the same text whatever makes the
logits (the tests check the text against one fused call per character).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from charrnn.config import SampleConfig
from charrnn.errors import CharrnnError
from charrnn.fileio import read_text
from charrnn.model import CharRNN, State, gru_gates, gru_next, lstm_gates, lstm_next
from charrnn.vocab import Vocab

UNIFORM_BLOCK = 4096  # uniform numbers drawn per call to the generator
PRIME_BLOCK = 4096  # prime characters fed per call of the model: memory bounded by the block
MAX_PRIME = 1 << 22  # characters a --prime-file may hold (tens of MB at most in memory)
MIXER_CONTEXT = 32  # characters before the next one a mixer is shown (its counts' longest)


def distribution(logits: np.ndarray, cfg: SampleConfig) -> np.ndarray:
    """The float64 distribution to draw from, after temperature, top-k and top-p; (V,)."""
    logits = np.asarray(logits, dtype=np.float64)
    if cfg.temperature == 0:
        probs = np.zeros_like(logits)
        probs[np.argmax(logits)] = 1.0
        return probs
    # shifted first, so that a temperature too small to divide by gives -inf, not NaN: greedy
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        logits = (logits - logits.max()) / cfg.temperature
    logits[np.isnan(logits)] = 0.0  # (the maximum's own 0 / tiny)
    if cfg.top_k is not None and cfg.top_k < len(logits):
        kth = np.partition(logits, -cfg.top_k)[-cfg.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if cfg.top_p is not None and cfg.top_p < 1:
        order = np.argsort(-probs, kind="stable")
        before = np.cumsum(probs[order]) - probs[order]  # mass of the likelier characters
        probs[order[before >= cfg.top_p]] = 0.0
    return probs


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw with one uniform number in [0, 1): identical for identical inputs."""
    cdf = np.cumsum(probs)
    return min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), len(probs) - 1)


def check_prime(prime: str, vocab: Vocab, drop_unknown: bool) -> str:
    problem = vocab.describe_unknown(prime)
    if problem is None:
        return prime
    if drop_unknown:
        known = set(vocab.chars)
        return "".join(ch for ch in prime if ch in known)
    raise CharrnnError(f"the prime has {problem}; change the prime, or pass --drop-unknown to "
                       "leave them out")


def read_prime(path: Path) -> str:
    prime, more = read_text(path, "--prime-file", MAX_PRIME)
    if more:
        raise CharrnnError(f"--prime-file {path} holds more than {MAX_PRIME:,} characters, the "
                           f"most a prime may have; prime with its end instead (tail -c 1000000 "
                           f"{path} > end.txt): a recurrent state keeps little from further back")
    return prime


def unescape(text: str) -> str:
    """A command-line text with \\n, \\t and \\\\ written out, as the characters they stand for."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def start_ids(prime: str, vocab: Vocab, generator: torch.Generator) -> np.ndarray:
    """The ids fed before the first draw: the prime, or a newline, or a random character."""
    if prime:
        return vocab.encode(prime).astype(np.int64)
    if "\n" in vocab.chars:
        return np.array([vocab.chars.index("\n")])
    return np.array([int(torch.randint(len(vocab), (), generator=generator))])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|, unlike 1 / (1 + e^-x)


class Stepper:
    """The model's recurrences for one character at a time, in numpy float32 on the CPU."""

    def __init__(self, model: CharRNN, state: State):
        c = model.config
        self.kind, self.H = c.model, c.hidden_size
        w = {k: v.detach().to("cpu", torch.float32).numpy()
             for k, v in model.state_dict().items()}
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = [], [], [], []
        for k in range(c.layers):
            b_ih, b_hh = w[f"rnn.bias_ih_l{k}"], w[f"rnn.bias_hh_l{k}"]
            if self.kind != "gru":  # the GRU's b_hh sits inside r * (W_hn h + b_hn): keep it
                b_ih, b_hh = b_ih + b_hh, np.zeros_like(b_hh)
            self.w_ih.append(np.ascontiguousarray(w[f"rnn.weight_ih_l{k}"].T))  # (in, G*H)
            self.w_hh.append(np.ascontiguousarray(w[f"rnn.weight_hh_l{k}"].T))  # (H, G*H)
            self.b_ih.append(b_ih)
            self.b_hh.append(b_hh)
        # layer 1's input projection for every character, computed once: (V, G*H)
        self.table = w["embed.weight"] @ self.w_ih[0] + self.b_ih[0]
        self.head_w = np.ascontiguousarray(w["head.weight"].T)  # (H, V)
        self.head_b = w["head.bias"]
        self.h = [s.astype(np.float32) for s in state[0][:, 0].cpu().numpy()]
        self.c = ([s.astype(np.float32) for s in state[1][:, 0].cpu().numpy()]
                  if self.kind == "lstm" else None)

    def select(self, rows: np.ndarray) -> None:
        """Keep the states of `rows` (a beam's parents, one row each; from one state, its
        copies): the state becomes (len(rows), H), and `step` takes and gives rows."""
        self.h = [(h if h.ndim == 2 else h[None])[rows] for h in self.h]
        if self.c is not None:
            self.c = [(c if c.ndim == 2 else c[None])[rows] for c in self.c]

    def step(self, i) -> np.ndarray:
        """Feed character id i; return the logits for the next character, (V,). After
        `select`, i holds an id for each row, and the logits are (rows, V)."""
        H, x = self.H, None
        for k in range(len(self.h)):
            xw = self.table[i] if k == 0 else x @ self.w_ih[k] + self.b_ih[k]
            hw = self.h[k] @ self.w_hh[k]
            if self.kind == "lstm":
                i, f, g, o = lstm_gates(xw + hw, H, _sigmoid, np.tanh)
                self.h[k], self.c[k] = lstm_next(i, f, g, o, self.c[k], np.tanh)
            elif self.kind == "gru":
                _, z, n = gru_gates(xw, hw + self.b_hh[k], H, _sigmoid, np.tanh)
                self.h[k] = gru_next(z, n, self.h[k])
            else:
                self.h[k] = np.tanh(xw + hw)
            x = self.h[k]
        return x @ self.head_w + self.head_b


@torch.no_grad()
def generate(model: CharRNN, vocab: Vocab, prime: str, cfg: SampleConfig,
             generator: torch.Generator, stepper=None, mixer=None) -> Iterator[str]:
    """Yield `cfg.length` characters, one at a time, continuing `prime` (not yielded).
    `stepper` makes the per-character step from (model, state): Stepper unless given.
    `mixer(logits, ids so far)` gives the log-probabilities to draw from instead of the
    network's logits (sample --mix: charrnn/evaluation/mixing.py)."""
    model.eval()
    device = next(model.parameters()).device
    start = start_ids(prime, vocab, generator)
    ids = torch.from_numpy(start)
    state = None
    for block in ids.split(PRIME_BLOCK):  # the prime through the fused model, block by block
        logits, state = model(block[None].to(device), state)
    last = logits[0, -1].float().cpu().numpy()
    stepper = (stepper or Stepper)(model, state)
    context = start[-MIXER_CONTEXT:].tolist()  # (trimmed now and then, not every step)
    for n in range(cfg.length):
        if n % UNIFORM_BLOCK == 0:  # uniforms in blocks: one call per block, bounded memory
            block = min(UNIFORM_BLOCK, cfg.length - n)
            uniforms = torch.rand(block, generator=generator, dtype=torch.float64).numpy()
        scores = last if mixer is None else mixer(last, context)
        i = draw(distribution(scores, cfg), uniforms[n % UNIFORM_BLOCK])
        yield vocab.chars[i]
        context.append(i)
        if len(context) > 2 * MIXER_CONTEXT:
            del context[:-MIXER_CONTEXT]
        if n + 1 < cfg.length:
            last = stepper.step(i)


def seeded(seed: int | None) -> torch.Generator:
    """A generator of its own (the same seed, the same text), or one seeded afresh."""
    return torch.Generator().manual_seed(seed if seed is not None else
                                         int(torch.seed() % 2**63))


def until(stop: str | None, chars: Iterator[str]) -> Iterator[str]:
    """The characters, ending once `stop` has been written (all of them without one)."""
    if stop is None:
        yield from chars
        return
    tail = ""
    for ch in chars:
        yield ch
        tail = (tail + ch)[-len(stop):]
        if tail == stop:
            return


def write_samples(out, model: CharRNN, vocab: Vocab, prime: str, configs: list[SampleConfig],
                  count: int = 1, stop: str | None = None, heading=None, tick=None,
                  keep: bool = False, mixer=None) -> str | None:
    """Write `count` samples for each of `configs` (one per temperature, each from the first's
    seed: the same text as separate calls) to `out`, each after the prime, all separated by a
    blank line; `heading(cfg)` is called before each temperature's when there are several, `tick()`
    after each character. The text ends as the model ended it: a closing newline is added only
    for a terminal. With `keep`, return what was drawn (for --novelty); else nothing is kept.
    `mixer`: see `generate`."""
    seed = configs[0].seed if configs[0].seed is not None else int(torch.seed() % 2**63)
    kept: list[str] | None = [] if keep else None
    for k, cfg in enumerate(configs):
        generator = torch.Generator().manual_seed(seed)
        if len(configs) > 1 and heading is not None:
            out.flush()
            heading(cfg)
        for n in range(count):
            if n or k:
                out.write("\n\n")
            out.write(prime)
            for ch in until(stop, generate(model, vocab, prime, cfg, generator, mixer=mixer)):
                out.write(ch)
                if tick is not None:
                    tick()
                if kept is not None:
                    kept.append(ch)
            if kept is not None:
                kept.append("\n\n")
    if out.isatty():
        out.write("\n")
    out.flush()
    return "".join(kept) if kept is not None else None
