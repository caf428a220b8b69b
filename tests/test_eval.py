"""charrnn eval: the model beside n-gram baselines that are right where the truth is known."""

import json

import numpy as np
import pytest
from conftest import invoke, train_run

from charrnn.evaluation import evaluate, ngram


def markov_text(n: int, vocab: int = 6, seed: int = 0):
    """A text from a random order-2 Markov chain, and its true loss per character."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(vocab, 0.3), size=(vocab, vocab))
    cdf = table.cumsum(-1)
    ids = np.zeros(n, dtype=np.int64)
    u = rng.random(n)
    for i in range(2, n):
        ids[i] = min(np.searchsorted(cdf[ids[i - 2], ids[i - 1]], u[i]), vocab - 1)
    return ids, table


def test_kneser_ney_of_order_2_finds_the_entropy_of_an_order_2_chain():
    ids, table = markov_text(200_000)
    train, test = ids[:170_000], ids[170_000:]
    truth = -np.log(table[test[:-2], test[1:-1], test[2:]]).mean()
    raw, continuation = ngram.count(train, 5)
    losses = [ngram.loss(ngram.probabilities(ngram.kneser_ney(raw, continuation, order), test,
                                             6)[1:]) for order in range(6)]
    assert abs(losses[2] - truth) < 0.01  # order 2 knows what the chain knows
    assert losses[0] > losses[1] > losses[2] + 0.2  # less context knows less
    assert min(losses[3:]) > losses[2] - 0.005  # more context learns nothing more (noise only)


def test_probabilities_are_a_distribution():
    ids, _ = markov_text(20_000, vocab=4)
    raw, continuation = ngram.count(ids[:15_000], 3)
    for order in range(4):
        lv = ngram.kneser_ney(raw, continuation, order)
        context = ids[15_000:15_010]
        total = sum(ngram.probabilities(lv, np.append(context, c), 4)[-1] for c in range(4))
        assert total == pytest.approx(1.0, abs=1e-9)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    text = "".join(f"line {i % 17}: the cat sat on the mat, number {i % 5}\n" for i in range(600))
    (folder / "cats.txt").write_text(text)
    train_run(folder / "cats.txt", folder / "run", max_steps=200, lr=1e-2, batch_size=8,
              seq_len=32, eval_every=100, model={"hidden_size": 64, "dropout": 0.0})
    return folder


def test_eval_puts_a_trained_model_beside_the_baselines(trained, monkeypatch):
    result = invoke("eval", trained / "run", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["rows"]}
    assert set(rows) == ({"charrnn", "uniform", "unigram"} | {f"{n}-gram" for n in range(2, 11)}
                         | {"charrnn, adapting", "charrnn + counts", "charrnn + counts, adapting"}
                         | {"bz2", "lzma", "zlib"})
    assert rows["charrnn"]["nats"] < rows["unigram"]["nats"] < rows["uniform"]["nats"]
    for r in rows.values():
        assert r["bits"] == pytest.approx(r["nats"] / np.log(2))
        assert r["perplexity"] == pytest.approx(np.exp(r["nats"]))
    monkeypatch.setattr(ngram, "count", lambda *a: pytest.fail("counted again"))
    again = invoke("eval", trained / "run", "--json")  # the baselines come from the cache
    assert json.loads(again.stdout)["rows"] == json.loads(result.stdout)["rows"]
    table = invoke("eval", trained / "run")
    assert "10-gram" in table.stdout and "charrnn" in table.stdout


def test_eval_on_a_file_writes_each_characters_probability(trained, tmp_path):
    text = tmp_path / "more.txt"
    text.write_text("line 3: the cat sat on the mat, number 1\n")
    out = tmp_path / "chars.jsonl"
    result = invoke("eval", trained / "run", text, "--per-char", out)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["char"] for r in lines] == list(text.read_text()[1:])
    assert all(0 < r["p"] <= 1 for r in lines)
    loss = -np.mean(np.log([r["p"] for r in lines]))
    model_row = evaluate.evaluate(trained / "run", text)["rows"][0]
    assert model_row["nats"] == pytest.approx(loss, rel=1e-6)


def test_eval_on_a_file_with_unseen_characters_says_which(trained, tmp_path):
    text = tmp_path / "dog.txt"
    text.write_text("the dog ate the homework\n")
    result = invoke("eval", trained / "run", text, catch_exceptions=True)
    assert result.exit_code == 1
    assert "never saw" in result.stderr and "evaluate on text made of the run's" in result.stderr
