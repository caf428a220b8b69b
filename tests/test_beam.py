"""Beam search (charrnn/beam.py): the likeliest continuation under the model, checked against
every text there is on a model small enough to list them all."""

import itertools

import numpy as np
import pytest
import torch
from conftest import invoke, train_run

from charrnn.beam import beam_search
from charrnn.config import ModelConfig, SampleConfig
from charrnn.model import CharRNN
from charrnn.sample import Stepper, generate
from charrnn.vocab import Vocab

VOCAB = Vocab(tuple("\nabc"))


def model(kind="lstm", seed=0, layers=2):
    torch.manual_seed(seed)
    m = CharRNN(ModelConfig(vocab_size=len(VOCAB), model=kind, hidden_size=12, layers=layers,
                            embedding_size=4, dropout=0.0)).eval()
    with torch.no_grad():  # sharper distributions than a fresh model's: beams then differ
        m.head.weight.mul_(6.0)
    return m


@torch.no_grad()
def log_probability(m, prime: str, text: str) -> float:
    """The model's log-probability of `text` after `prime`, from one fused call."""
    ids = torch.from_numpy(VOCAB.encode(prime + text).astype(np.int64))[None]
    logp = torch.log_softmax(m(ids)[0][0].double(), dim=-1)
    return float(sum(logp[len(prime) - 1 + k, ids[0, len(prime) + k]]
                     for k in range(len(text))))


def beam(m, width, length, prime="ab", stop=None) -> str:
    return "".join(beam_search(m, VOCAB, prime, width, length, stop))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_wide_enough_beam_finds_the_likeliest_text_of_all(kind):
    """With a beam as wide as every text of length n - 1, the search is exhaustive: its text
    is the likeliest of all 4^4 texts, as the fused model scores them."""
    for seed in range(3):
        m = model(kind, seed)
        texts = ["".join(t) for t in itertools.product(VOCAB.chars, repeat=4)]
        scored = {t: log_probability(m, "ab", t) for t in texts}
        best = max(scored.values())
        found = beam(m, len(VOCAB) ** 3, 4)
        assert scored[found] == pytest.approx(best, abs=1e-9), (found, seed)
        assert scored[beam(m, 3, 4)] <= best + 1e-9  # (a narrower beam: never better)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_beam_of_one_is_the_argmax_text(kind):
    m = model(kind)
    greedy = "".join(generate(m, VOCAB, "ab", SampleConfig(temperature=0.0, length=300),
                              torch.Generator().manual_seed(0)))
    assert beam(m, 1, 300) == greedy


def test_the_states_of_a_beam_step_together_as_each_would_alone():
    m = model("lstm", layers=3)
    ids = torch.from_numpy(VOCAB.encode("abca").astype(np.int64))[None]
    with torch.no_grad():
        _, state = m(ids)
    rows = np.array([0, 0, 0])
    together = Stepper(m, state)
    together.select(rows)
    got = together.step(np.array([1, 2, 3]))
    for k, i in enumerate([1, 2, 3]):
        alone = Stepper(m, state)
        np.testing.assert_allclose(got[k], alone.step(i), rtol=1e-5, atol=1e-6)


def test_a_beam_is_deterministic_and_ends_at_its_stop():
    m = model("lstm", 1)
    first = beam(m, 4, 200, stop="c\n")
    assert first == beam(m, 4, 200, stop="c\n")
    assert first.endswith("c\n") or len(first) == 200
    assert "c\n" not in first[:-2]  # ended at the first stop it wrote


def test_ended_texts_are_compared_per_character_so_a_short_one_is_not_favoured():
    """A text ends at its first stop, or at the length. An exhaustive beam returns, of every
    text that can end, the one with the best log-probability per character; by the total
    log-probability the shortest would often win for being short, and here it does for some
    model: the two rules pick differently, and the beam follows the first."""
    length, stop, differ = 4, "a", 0
    texts = [t for n in range(1, length + 1)
             for t in ("".join(p) for p in itertools.product(VOCAB.chars, repeat=n))
             if (t.endswith(stop) and stop not in t[:-1]) or (n == length and stop not in t[:-1])]
    for seed in range(6):
        m = model("gru", seed)
        scored = {t: log_probability(m, "ab", t) for t in texts}
        per_char = max(texts, key=lambda t: scored[t] / len(t))
        found = beam(m, len(VOCAB) ** length, length, stop=stop)
        assert scored[found] / len(found) == pytest.approx(scored[per_char] / len(per_char),
                                                           abs=1e-9), seed
        differ += max(texts, key=scored.get) != per_char
    assert differ  # (else this test could not tell the two rules apart)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("beam")
    corpus = folder / "c.txt"
    corpus.write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 60)
    train_run(corpus, folder / "run", max_steps=60, batch_size=8, seq_len=32, lr=1e-2)
    return folder / "run"


def test_sample_beam_on_the_command_line_and_in_the_api(run):
    import charrnn

    a = invoke("sample", run, "--beam", 4, "--prime", "the ", "--length", 80)
    b = invoke("sample", run, "--beam", 4, "--prime", "the ", "--length", 80)
    assert a.exit_code == 0 and a.stdout == b.stdout and a.stdout.startswith("the ")
    loaded = charrnn.load(run)
    assert loaded.sample(80, prime="the ", beam=4) == a.stdout[len("the "):]
    greedy = invoke("sample", run, "--argmax", "--prime", "the ", "--length", 80)
    assert invoke("sample", run, "--beam", 1, "--prime", "the ", "--length", 80).stdout == \
        greedy.stdout
    stopped = invoke("sample", run, "--beam", 4, "--prime", "the ", "--stop", ".",
                     "--length", 200)
    assert stopped.exit_code == 0 and stopped.stdout.endswith(".")


@pytest.mark.parametrize("args, says", [
    (["--beam", "0"], "--beam must be a whole number from 1 to 1024, not 0"),
    (["--beam", "4", "--temp", "0.5"], "--temperature is for drawing samples"),
    (["--beam", "4", "--top-k", "3", "--seed", "1"], "--top-k, --seed are for drawing"),
    (["--beam", "4", "--num-samples", "2"], "--num-samples is for drawing"),
])
def test_beam_with_the_options_of_a_draw_is_one_line(run, args, says):
    result = invoke("sample", run, *args, catch_exceptions=True)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("charrnn: error: ") and says in lines[0], \
        result.stderr
