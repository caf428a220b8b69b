"""Beam search: the likeliest continuation of a prime under the model, not a draw from it.

`sample --beam N` keeps the N likeliest texts so far; at each step every one of them is
extended by every character, and the N likeliest extensions go on. The N states step together
as the rows of one batch through the sampler's numpy recurrences (charrnn/sample.py's
Stepper), so a beam of N costs far less than N samples. A text ends at `length` characters,
or once it has written `stop`; the ended texts are compared by their log-probability per
character (length-normalised), so a short one is not favoured for being short. Beam 1 is the
greedy text, the same as `--argmax`. Deterministic: ties go to the lower character id.

The text streams: a character is handed out once every text still in the running (the beams,
and the ended ones kept) agrees on it, since a text that has left the running never returns.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from charrnn.model import CharRNN
from charrnn.sample import MIXER_CONTEXT, PRIME_BLOCK, Stepper, start_ids
from charrnn.vocab import Vocab

MAX_BEAM = 1024  # texts in a beam: past this a beam costs more than it finds


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


@torch.no_grad()
def beam_search(model: CharRNN, vocab: Vocab, prime: str, width: int, length: int,
                stop: str | None = None, mixer=None, stepper=None) -> Iterator[str]:
    """Yield the characters of the likeliest continuation of `prime` (not yielded) found by a
    beam of `width`, at most `length` of them, ending at `stop` when one is written. `mixer`
    and `stepper` as for charrnn.sample.generate."""
    model.eval()
    device = next(model.parameters()).device
    start = start_ids(prime, vocab, torch.Generator().manual_seed(0))
    state = None
    for block in torch.from_numpy(start).split(PRIME_BLOCK):
        logits, state = model(block[None].to(device), state)
    stepper = (stepper or Stepper)(model, state)
    if width > 1:  # (a beam of 1 steps one state, exactly as sampling does: --argmax's text)
        stepper.select(np.zeros(1, dtype=np.int64))
    try:
        stop_ids = None if stop is None else vocab.encode(stop).tolist()
    except KeyError:
        stop_ids = None  # (a stop with characters the model never writes: never reached)
    texts = np.zeros((1, 0), dtype=np.int64)  # the beams, one row each
    scores = np.zeros(1)  # their log-probabilities
    ended: list[tuple[float, list[int]]] = []  # (log-probability per character, ids)
    last = logits[0, -1:].float().cpu().numpy()  # (beams, V)
    context = start[-MIXER_CONTEXT:].tolist()
    given = 0  # characters handed out: agreed by every text still in the running
    for n in range(length):
        if mixer is not None:  # (each beam's own text as the counts' context)
            last = np.stack([mixer(row, context + texts[b, -MIXER_CONTEXT:].tolist())
                             for b, row in enumerate(last)])
        total = (scores[:, None] + _log_softmax(last)).ravel()
        best = np.argsort(-total, kind="stable")[:width]  # (ties: the lower beam, then id)
        parents, ids = np.divmod(best, last.shape[1])
        texts = np.concatenate([texts[parents], ids[:, None]], axis=1)
        scores = total[best]
        done = np.full(len(ids), n + 1 == length)
        if stop_ids is not None and texts.shape[1] >= len(stop_ids):
            done |= (texts[:, -len(stop_ids):] == stop_ids).all(axis=1)
        for b in np.flatnonzero(done):
            ended.append((scores[b] / texts.shape[1], texts[b].tolist()))
        ended = sorted(ended, key=lambda e: -e[0])[:width]  # (stable: the earlier first)
        live = ~done
        if len(ended) == width:  # a beam whose best possible end cannot beat the last kept
            # (log-probabilities only fall: at most its score over the longest it can get)
            live &= scores / (texts.shape[1] + length - n - 1) >= ended[-1][0]
        texts, scores, parents, ids = texts[live], scores[live], parents[live], ids[live]
        agreed = _agreed(texts, ended, given)
        running = texts[0].tolist() if len(texts) else ended[0][1]
        yield from (vocab.chars[i] for i in running[given:agreed])
        given = agreed
        if not len(texts):
            break
        if width > 1:
            stepper.select(parents)
            last = stepper.step(ids)
        else:
            last = stepper.step(int(ids[0]))[None]
    best_ids = ended[0][1] if ended else []
    yield from (vocab.chars[i] for i in best_ids[given:])


def _agreed(texts: np.ndarray, ended: list, given: int) -> int:
    """How many characters every text still in the running (the live beams, the ended ones
    kept) begins with alike, knowing that they agree on the first `given`."""
    rows = [t for _, t in ended] + ([texts[0].tolist()] if len(texts) else [])
    n = min(len(t) for t in rows)
    if len(texts):
        n = min(n, texts.shape[1])
        differ = (texts[:, given:n] != texts[0, given:n]).any(axis=0)
        n = given + int(np.argmax(differ)) if differ.any() else n
    first = rows[-1]
    for t in rows[:-1]:
        k = given
        while k < n and t[k] == first[k]:
            k += 1
        n = k
    return n


def write_beam(out, model: CharRNN, vocab: Vocab, prime: str, width: int, length: int,
               stop: str | None = None, mixer=None, tick=None, keep: bool = False
               ) -> str | None:
    """Write the prime and the beam's text to `out` as it is agreed (charrnn/output.py's
    TextOut), as write_samples writes a sample; with `keep`, return the text (--novelty)."""
    kept = []
    out.write(prime)
    for ch in beam_search(model, vocab, prime, width, length, stop, mixer):
        out.write(ch)
        if tick is not None:
            tick()
        if keep:
            kept.append(ch)
    if out.isatty():
        out.write("\n")
    out.flush()
    return "".join(kept) if keep else None
