import math

import numpy as np
import pytest
import torch
from reference import FusedStepper

from charrnn.config import ModelConfig, SampleConfig
from charrnn.errors import CharrnnError
from charrnn.model import CharRNN
from charrnn.sample import check_prime, distribution, draw, generate
from charrnn.vocab import Vocab

VOCAB = Vocab(tuple("\n abcdefgh"))


def model(kind="lstm", layers=2, hidden_size=16):
    torch.manual_seed(0)
    m = CharRNN(ModelConfig(vocab_size=len(VOCAB), model=kind, hidden_size=hidden_size,
                            layers=layers, embedding_size=8)).eval()
    return m


def text(m, seed, fast=True, prime="ab", **cfg):
    return "".join(generate(m, VOCAB, prime, SampleConfig(**{"length": 300, **cfg}),
                            torch.Generator().manual_seed(seed),
                            stepper=None if fast else FusedStepper))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_fast_path_gives_the_same_text_as_the_straightforward_path(kind, layers):
    m = model(kind, layers, hidden_size=64)
    for seed, cfg in [(1, {}), (2, {"temperature": 1.0}), (3, {"temperature": 0}),
                      (4, {"top_k": 3, "temperature": 1.3}), (5, {"top_p": 0.8})]:
        fast = text(m, seed, fast=True, length=2000, **cfg)
        slow = text(m, seed, fast=False, length=2000, **cfg)
        assert fast == slow
        if cfg.get("temperature") != 0:
            assert len(set(fast)) >= 3  # a real draw, not a fixed point


def test_fast_path_logits_match_the_model():
    from charrnn.sample import Stepper
    for kind in ("lstm", "gru", "rnn"):
        m = model(kind, 2, 32)
        x = torch.randint(len(VOCAB), (1, 40), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            full, _ = m(x)
            _, state = m(x[:, :1])
        stepper = Stepper(m, state)
        for t in range(1, 40):
            assert np.allclose(stepper.step(int(x[0, t])), full[0, t].numpy(), atol=1e-4)


def test_same_seed_same_sample_other_seed_other_sample():
    m = model()
    assert text(m, 1) == text(m, 1)
    assert text(m, 1) != text(m, 2)
    assert len(text(m, 1, length=7)) == 7


def test_a_long_prime_is_fed_in_blocks_with_the_same_result(monkeypatch):
    import charrnn.sample as sample
    m = model()
    prime = "abc defg\nhab " * 40
    whole = text(m, 3, prime=prime)
    monkeypatch.setattr(sample, "PRIME_BLOCK", 7)  # blocks that split the prime unevenly
    assert text(m, 3, prime=prime) == whole


def entropy(probs):
    p = probs[probs > 0]
    return float(-(p * np.log(p)).sum())


def test_lower_temperature_lower_entropy():
    logits = np.random.default_rng(0).normal(size=50) * 2
    entropies = [entropy(distribution(logits, SampleConfig(temperature=t)))
                 for t in (2.0, 1.0, 0.5, 0.2)]
    assert entropies == sorted(entropies, reverse=True)
    assert entropy(distribution(logits, SampleConfig(temperature=0))) == 0


def test_lower_temperature_gives_less_varied_text():
    m = model()

    def distinct_bigrams(t):
        s = text(m, 5, temperature=t, length=2000)
        return len({s[i:i + 2] for i in range(len(s) - 1)})
    assert distinct_bigrams(0.3) < distinct_bigrams(1.5)


def test_temperature_zero_is_greedy_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0])
    probs = distribution(logits, SampleConfig(temperature=0))
    assert all(draw(probs, u) == 1 for u in np.linspace(0, 0.999, 20))


def test_top_k_and_top_p_keep_only_the_likeliest():
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    assert (distribution(logits, SampleConfig(temperature=1, top_k=2)) > 0).tolist() == \
        [True, True, False, False]
    assert (distribution(logits, SampleConfig(temperature=1, top_p=0.75)) > 0).tolist() == \
        [True, True, False, False]
    assert (distribution(logits, SampleConfig(temperature=1, top_p=0.4)) > 0).tolist() == \
        [True, False, False, False]
    probs = distribution(logits, SampleConfig(temperature=1, top_k=2))
    assert {draw(probs, u) for u in np.random.default_rng(0).random(200)} == {0, 1}


def test_draws_follow_the_distribution():
    probs = np.array([0.2, 0.0, 0.8])
    us = np.random.default_rng(0).random(4000)
    counts = np.bincount([draw(probs, u) for u in us], minlength=3)
    assert counts[1] == 0 and math.isclose(counts[2] / 4000, 0.8, abs_tol=0.03)


def test_prime_with_unseen_characters_is_an_error_that_lists_them():
    with pytest.raises(CharrnnError, match="'X' 'Z'"):
        check_prime("abXcZ", VOCAB, drop_unknown=False)
    assert check_prime("abXcZ", VOCAB, drop_unknown=True) == "abc"


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=-0.1), "--temperature"),
    (dict(top_p=0.0), "--top-p"),
    (dict(top_p=1.5), "--top-p"),
    (dict(top_k=0), "--top-k"),
    (dict(length=-1), "--length"),
])
def test_bad_sampling_options_are_clear_errors(bad, message):
    with pytest.raises(CharrnnError, match=message):
        SampleConfig(**bad)


def test_novelty_finds_a_planted_copied_stretch():
    from charrnn.evaluation.novelty import longest_copy

    rng = np.random.default_rng(0)
    corpus = rng.integers(0, 30, 200_000)
    sample = rng.integers(0, 30, 3_000)
    sample[1200:1257] = corpus[150_000:150_057]  # 57 characters copied verbatim
    copy = longest_copy(sample, corpus)
    assert (copy.length, copy.sample_at, copy.corpus_at) == (57, 1200, 150_000)
    assert longest_copy(sample[:0], corpus).length == 0
    assert longest_copy(np.array([99]), corpus).length == 0  # nothing in common
