import math

import pytest
import torch

from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, ModelConfig
from charrnn.sample import SampleConfig, check_prime, distribution, draw, generate
from charrnn.vocab import Vocab

VOCAB = Vocab(tuple("\n abcdefgh"))


def model(kind="lstm"):
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(VOCAB), model=kind, hidden_size=16,
                               embedding_size=8)).eval()


def text(m, seed, **cfg):
    return "".join(generate(m, VOCAB, "ab", SampleConfig(**{"length": 300, **cfg}),
                            torch.Generator().manual_seed(seed)))


def test_same_seed_same_sample_other_seed_other_sample():
    m = model()
    assert text(m, 1) == text(m, 1)
    assert text(m, 1) != text(m, 2)
    assert len(text(m, 1, length=7)) == 7


def entropy(probs):
    p = probs[probs > 0]
    return float(-(p * p.log()).sum())


def test_lower_temperature_lower_entropy():
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)) * 2
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
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    g = torch.Generator().manual_seed(0)
    assert all(draw(distribution(logits, SampleConfig(temperature=0)), g) == 1 for _ in range(20))


def test_top_k_and_top_p_keep_only_the_likeliest():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert (distribution(logits, SampleConfig(temperature=1, top_k=2)) > 0).tolist() == \
        [True, True, False, False]
    assert (distribution(logits, SampleConfig(temperature=1, top_p=0.75)) > 0).tolist() == \
        [True, True, False, False]
    assert (distribution(logits, SampleConfig(temperature=1, top_p=0.4)) > 0).tolist() == \
        [True, False, False, False]
    g = torch.Generator().manual_seed(0)
    probs = distribution(logits, SampleConfig(temperature=1, top_k=2))
    assert {draw(probs, g) for _ in range(200)} == {0, 1}


def test_draws_follow_the_distribution():
    probs = torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(probs, g) for _ in range(4000)]), minlength=3)
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
