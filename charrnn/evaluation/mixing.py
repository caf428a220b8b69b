"""A run's models side by side on one text, and their mixtures (charrnn/evaluation/mixture.py):

- static: the network as trained, mixed with the counts of its training text (`eval`'s
  "charrnn + counts", what `sample --mix` draws from);
- reading: the network learning as it reads (charrnn/adapt.py), mixed with the counts of its
  training text, the counts of the text read so far, the match model of the text read so far
  (charrnn/evaluation/match_model.py) and the network as trained (steady where the learner
  strays), its gate reading each model's record on that text (`eval`'s "charrnn + counts,
  adapting");
- adapting: the first three of those, without the records (what `sample --adapt --mix`
  draws from, the text read being the prime: on text the sampler writes itself, a model's
  record says nothing of the user's text, and matches of it would feed its own loops);
- own: the network learning as it reads, mixed with the counts of the text read so far only
  (what `sample --adapt` draws from).

Each mixture's gate is fitted on the run's validation text, never on the text being scored, and
kept in the cache beside the run's counts, keyed by the model's weights: a later evaluation of
any text reads the same gate. When the text being scored is the validation text itself, each
half is scored with gates fitted on the other half.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import torch

from charrnn import adapt
from charrnn.evaluation import counts, match_model, ngram
from charrnn.evaluation.mixture import FIT_CHARS, Gate, features, fit, records
from charrnn.fileio import atomic_write_text, read_json_object
from charrnn.model import CharRNN

OWN_ORDER = 16  # characters of context of the counts of the text read so far
OWN_DISCOUNT = 0.5  # their one discount (both chosen in benchmarks/adapt.py)
RECORD_WINDOWS = (4, 32, 256, 2048)  # characters a model's record is kept over (the same)
KINDS = ("static", "reading", "adapting", "own")
MODELS = {"static": 2, "reading": 5, "adapting": 3, "own": 2}  # the network's first
GATES_FORMAT = 1


@dataclass
class Readings:
    """What each model says of each character of one text (characters 1 .. N - 1)."""

    static: adapt.Reading
    counts: ngram.Scores | None  # the training text's, where it was counted
    adapting: adapt.Reading | None = None
    own: ngram.Scores | None = None
    matches: match_model.Matches | None = None

    def inputs(self, kind: str) -> tuple[list[np.ndarray], np.ndarray]:
        """(each model's probabilities, the gate's features) of the mixture `kind`."""
        if kind == "reading":
            ps, x = self.inputs("adapting")
            ps += [self.matches.p, self.static.p]
            length = self.matches.length
            return ps, np.concatenate([x, np.log1p(length)[:, None] / 4,
                                       (length > 0)[:, None].astype(np.float64),
                                       self.static.entropy[:, None].astype(np.float64),
                                       records(ps, RECORD_WINDOWS)], axis=1)
        if kind == "static":
            return ([self.static.p, self.counts.p],
                    features(self.static.entropy, [(self.counts, counts.ORDER)]))
        if kind == "own":
            return ([self.adapting.p, self.own.p],
                    features(self.adapting.entropy, [(self.own, OWN_ORDER)]))
        return ([self.adapting.p, self.counts.p, self.own.p],
                features(self.adapting.entropy, [(self.counts, counts.ORDER),
                                                 (self.own, OWN_ORDER)]))

    def part(self, start: int, end: int) -> Readings:
        """The readings of characters start .. end - 1 of the predicted ones."""
        def cut(r):
            if r is None:
                return None
            return type(r)(**{k: v[start:end] for k, v in vars(r).items()})
        return Readings(cut(self.static), cut(self.counts), cut(self.adapting), cut(self.own),
                        cut(self.matches))


def read(model: CharRNN, ids: np.ndarray, counted: ngram.Model | None, vocab_size: int,
         adapting: bool, workers: int = 1) -> Readings:
    """Every model's reading of `ids` (the adapting ones only with `adapting`): the network's,
    and the count model's of the training text, `counted` (if given)."""
    r = Readings(adapt.static(model, ids),
                 ngram.score(counted, ids, vocab_size) if counted is not None else None)
    if adapting:
        r.adapting = adapt.read(model, ids, adapt.Adaptation(), workers)
        r.own = ngram.reading(ids, vocab_size, OWN_ORDER, OWN_DISCOUNT)
        r.matches = match_model.reading(ids, vocab_size)
    return r


def width(kind: str) -> int:
    """How many features the gate of mixture `kind` reads: a constant, the network's entropy
    and 3 per count model; the reading mixture also the match's length (2 columns), the entropy
    of the network as trained, and a record per window for each model after the first."""
    if kind == "reading":
        return width("adapting") + 3 + (MODELS[kind] - 1) * len(RECORD_WINDOWS)
    return 2 + 3 * (MODELS[kind] - 1)


def weights_digest(model: CharRNN) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _gates_path(counts_key: str):
    return counts.path_of(counts_key).with_suffix(".gates.json")


def _entry(model: CharRNN, kind: str) -> str:
    """What a gate depends on besides the counts: the weights, how the model adapts, the
    counts of the text read so far, how much validation text it is fitted on."""
    settings = [GATES_FORMAT, kind, weights_digest(model), repr(adapt.Adaptation()),
                OWN_ORDER, OWN_DISCOUNT, FIT_CHARS, adapt.STREAM]
    if kind == "reading":
        settings += [match_model.LENGTHS, match_model.MISS, RECORD_WINDOWS]
    return hashlib.blake2b(json.dumps(settings).encode(), digest_size=16).hexdigest()


def gate(kind: str, model: CharRNN, config: dict, vocab, counted: ngram.Model | None,
         val_ids=None, workers: int = 1) -> Gate:
    """The gate of mixture `kind` for this run: from the cache, else fitted on the first
    FIT_CHARS characters of its validation text (and kept)."""
    name = counts.key(config, vocab)
    path, entry = _gates_path(name), _entry(model, kind)
    models = MODELS[kind]
    cached = Gate.from_json(read_json_object(path).get(entry), models, width(kind))
    if cached is not None:
        return cached
    if val_ids is None:
        _, val_ids = counts.training_ids(config, vocab)
    part = np.asarray(val_ids[: FIT_CHARS + 1])
    found = fit(*read(model, part, counted, len(vocab), kind != "static",
                      workers).inputs(kind))
    kept = read_json_object(path)
    kept[entry] = found.to_json()
    try:
        atomic_write_text(path, json.dumps(kept) + "\n")
    except OSError:
        pass  # a cache we cannot write costs the next call its fitting, nothing else
    return found


def crossed(readings: Readings, kind: str) -> np.ndarray:
    """Each character's probability under mixture `kind` with gates fitted on the other half
    of the same text (the validation text scored with gates fitted on itself would flatter)."""
    n = len(readings.static.p)
    half = n // 2
    out = np.empty(n)
    for (a, b), (c, d) in (((0, half), (half, n)), ((half, n), (0, half))):
        g = fit(*readings.part(c, d).inputs(kind))
        ps, x = readings.part(a, b).inputs(kind)
        out[a:b] = g.mix(ps, x)
    return out


def mixed(readings: Readings, kind: str, g: Gate) -> np.ndarray:
    ps, x = readings.inputs(kind)
    return g.mix(ps, x)


class Mixer:
    """A mixture's distribution over the next character, one character at a time (what
    `sample --mix` draws from): given the network's logits and the ids so far, the log of the
    mixed probabilities, for the sampler's temperature, top-k and top-p to act on."""

    def __init__(self, g: Gate, counted: ngram.Model | None, vocab_size: int,
                 own: ngram.Model | None = None):
        self.gate, self.counted, self.own, self.vocab_size = g, counted, own, vocab_size
        self.memos = ({}, {})  # the lowest levels' distributions, by context, of each model
        self.longest = OWN_ORDER if own is not None else counts.ORDER

    def __call__(self, logits: np.ndarray, context) -> np.ndarray:
        # a few numpy calls on vectors of the vocabulary's size, the rest in Python floats: at
        # one character a call, each numpy call's fixed cost is what counts
        z = np.asarray(logits, dtype=np.float64)
        z = z - z.max()
        p_net = np.exp(z)
        total = float(p_net.sum())
        p_net /= total
        entropy = math.log(total) - float(np.dot(p_net, z))  # -sum p log p, p = e^z / total
        ps, x = [p_net], [1.0, entropy]
        for counted, order, memo in ((self.counted, counts.ORDER, self.memos[0]),
                                     (self.own, OWN_ORDER, self.memos[1])):
            if counted is None:
                continue
            p, depth, backoff, seen = ngram.distribution(counted, context[-order:],
                                                         self.vocab_size, memo)
            ps.append(p)
            x += [depth / order, backoff, math.log1p(seen) / 10]
        scores = [0.0] + [sum(a * b for a, b in zip(row, x)) for row in self.gate.coefficients]
        top = max(scores)
        weights = [math.exp(v - top) for v in scores]
        whole = sum(weights)
        mixed = p_net  # (a fresh array of ours: mixed in place)
        mixed *= weights[0] / whole
        for p, w in zip(ps[1:], weights[1:]):
            p *= w / whole  # (each a fresh array too)
            mixed += p
        return np.log(mixed, out=mixed)  # never log 0: the counts give every character some


def mixer(model: CharRNN, config: dict, vocab, prime_ids: np.ndarray | None, mix: bool,
          say=None, warn=None) -> Mixer | None:
    """The mixture a sample is drawn from: with `mix`, the network with the counts of the run's
    training text; with `prime_ids` (sample --adapt: the network adapted to the prime), with
    the counts of the prime too. `model` is the run's network as trained, the gate's key. None,
    said in one line (`warn`), where the counts or the gate cannot be had: the sample is then
    drawn from the network alone."""
    from charrnn.errors import CharrnnError

    kind = ("adapting" if mix else "own") if prime_ids is not None else "static"
    name = counts.key(config, vocab)
    try:
        counted = counts.load(name, len(vocab)) if mix else None
        if mix and counted is None:
            counted = counts.of_run(config, vocab, say=say, warn=warn)
        val_ids = None
        if _gate_missing(name, model, kind):
            _, val_ids = counts.training_ids(config, vocab)
            if say is not None:
                say("fitting how the models are mixed, on the run's validation text (once; "
                    f"cached in {_gates_path(name).parent})")
        g = gate(kind, model, config, vocab, counted, val_ids, torch.get_num_threads())
    except CharrnnError as e:  # (DamagedCounts among them)
        if warn is not None:
            what = "the counts of the run's training text" if mix else "its validation text"
            warn(f"{e}; sampling without the mixture ({'--mix' if mix else '--adapt'} needs "
                 f"{what})")
        return None
    own = (ngram.own_model(np.asarray(prime_ids), OWN_ORDER, OWN_DISCOUNT)
           if prime_ids is not None else None)
    return Mixer(g, counted, len(vocab), own)


def _gate_missing(name: str, model: CharRNN, kind: str) -> bool:
    return _entry(model, kind) not in read_json_object(_gates_path(name))
