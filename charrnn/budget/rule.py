"""The rule that chooses the model for a budget, a pure function: the largest candidate size
that can train on at least CHARS_PER_PARAMETER characters for each of its recurrent parameters
within the budget (as Chinchilla's rule of about 20 tokens a parameter does for transformers),
repeated passes over a small corpus counting for less than new text, and dropout where the
budget lets the model memorise its corpus. The constants are fitted to the grid that
benchmarks/grid.py measured (benchmarks/fit.py): those whose choices lose least against the
best size the grid knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from charrnn.config import ModelConfig

if TYPE_CHECKING:
    from charrnn.budget.speed import Speed

HIDDEN_SIZES = (64, 128, 192, 256, 384, 512, 768, 1024)  # the candidates, smallest first
LAYERS = 2
EMBEDDING = 64
# Larger batches barely ran faster on a 2-core Intel Xeon (a 2x256 LSTM: 33.9k chars/s at 32 x 64,
# 35.7k at 64 x 64, 37.1k at 64 x 100), so the smaller batch, with more steps, wins there
BATCH_SIZE = 32
SEQ_LEN = 64
LR = 4e-3

# benchmarks/fit.py over benchmarks/grid/grid.jsonl (benchmarks/grid/fit.json)
CHARS_PER_PARAMETER = 14.0  # the largest size that sees this many characters a parameter wins
REPEAT_DECAY = 16.0  # pass k over the corpus is worth exp(-(k - 1) / REPEAT_DECAY) of new text
# Dropout helps where the model can memorise the text: by the grid, once the characters seen
# times the parameters, over the unique characters squared (passes over the corpus, per unique
# character per parameter), reach DROPOUT_FROM; below, it only costs (benchmarks/fit.py)
DROPOUT_FROM = 5.0
MAX_DROPOUT = 0.3

TRAIN_SHARE = 0.85  # of a time budget, about what goes to training steps


def parameters(mc: ModelConfig) -> int:
    """The recurrent layers' parameters: the part of the model that its size choice scales
    (the embedding and the output layer depend on the vocabulary, not on the choice)."""
    from charrnn.checkpoint import expected_shapes

    return sum(math.prod(shape) for name, shape in expected_shapes(mc).items()
               if name.startswith("rnn."))


def effective_chars(seen: float, unique: float, repeat_decay: float = REPEAT_DECAY) -> float:
    """Characters seen, with each repeated pass over the corpus worth less than new text."""
    if seen <= unique:
        return seen
    repeats = seen / unique - 1
    return unique * (1 + repeat_decay * (1 - math.exp(-repeats / repeat_decay)))


def enough_chars(hidden_params: int, chars: float, unique: float, k: float = CHARS_PER_PARAMETER,
         repeat_decay: float = REPEAT_DECAY) -> bool:
    """Whether a model of this many recurrent parameters gets enough characters to train on
    (k and repeat_decay are the rule's constants; benchmarks/fit.py tries others)."""
    return effective_chars(chars, unique, repeat_decay) >= k * hidden_params


def memorising(seen: float, unique: float, hidden_params: int) -> float:
    """How far a budget lets a model memorise its corpus: the passes over it, times the
    parameters per unique character (the grid's measure of when dropout helps)."""
    unique = max(unique, 1)
    return seen / unique * hidden_params / unique


def dropout_for(seen: float, unique: float, hidden_params: int) -> float:
    """No dropout until `memorising` reaches DROPOUT_FROM; then 0.1, and 0.1 more each time it
    grows fourfold, up to MAX_DROPOUT (the grid measured the first step: 0.1 from 5, where 0.2
    at 6.8 did worse than 0.1; the steps past it are the rule's guess)."""
    m = memorising(seen, unique, hidden_params)
    if m < DROPOUT_FROM:
        return 0.0
    return round(min(MAX_DROPOUT, 0.1 * (1 + math.floor(math.log(m / DROPOUT_FROM, 4)))), 2)


@dataclass
class Choice:
    model: ModelConfig  # the run's network, as it will be built
    train: dict  # batch_size, seq_len, lr
    chosen: list  # the names of the settings charrnn chose; the others the user gave
    chars: int  # characters this choice can train on within the budget
    reason: str


def _fmt_seconds(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def choose(*, model: str, vocab_size: int, corpus_chars: int, given_model: dict,
           given_train: dict, chars: int | None = None, seconds: float | None = None,
           speeds: dict[int, Speed] | None = None, where: str = "this device",
           batch_size: int = BATCH_SIZE) -> Choice:
    """The settings for a budget of `chars` characters, or of `seconds` at `speeds` (chars/s
    per hidden size); settings the user gave (given_model, given_train) are kept, and
    `batch_size` is the batch when none was given."""
    layers = given_model.get("layers", LAYERS)
    embedding = given_model.get("embedding_size", EMBEDDING)
    train = {"batch_size": given_train.get("batch_size") or batch_size,
             "seq_len": given_train.get("seq_len") or SEQ_LEN,
             "lr": given_train.get("lr") or LR}
    sizes = ([given_model["hidden_size"]] if "hidden_size" in given_model else
             [h for h in HIDDEN_SIZES if chars is not None or h in (speeds or {})])
    hidden, seen = sizes[0], 0
    for h in sizes:  # smallest first: the last that still fits the budget wins
        mc = ModelConfig(vocab_size=vocab_size, model=model, layers=layers, hidden_size=h,
                         embedding_size=embedding, dropout=0.0)
        p = parameters(mc)
        chars_h = chars if chars is not None else speeds[h].train * seconds * TRAIN_SHARE
        if h == sizes[0] or enough_chars(p, chars_h, corpus_chars):
            hidden, seen = h, int(chars_h)
    mc = ModelConfig(vocab_size=vocab_size, model=model, layers=layers, hidden_size=hidden,
                     embedding_size=embedding, dropout=0.0)
    dropout = given_model.get("dropout", dropout_for(seen, corpus_chars, parameters(mc)))
    chosen = [k for k in ("layers", "hidden_size", "embedding_size", "dropout")
              if k not in given_model] + [k for k in train if not given_train.get(k)]
    why = (f"about {seen:,} characters fit in {_fmt_seconds(seconds)} at "
           f"{speeds[hidden].train:,.0f} chars/s on {where}" if chars is None else
           f"a budget of {seen:,} characters")
    passes = seen / max(corpus_chars, 1)
    if "dropout" in chosen and dropout:
        why += (f"; dropout {dropout:g} as that is {passes:.0f} passes over the corpus, enough "
                "for this size to memorise it")
    reason = f"{layers}x{hidden} {model}: {why}"
    return Choice(model=replace(mc, dropout=dropout), train=train, chosen=chosen, chars=seen,
                  reason=reason)
