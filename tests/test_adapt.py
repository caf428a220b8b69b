"""A model that learns from the text it reads (dynamic evaluation), mixed with count models:
no peeking by construction, settings that never come from the text being scored, the run left
as it was, and a damaged counts file that costs the mixture only."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import invoke, train_run

from charrnn import adapt, checkpoint
from charrnn.config import ModelConfig
from charrnn.evaluation import counts, match_model, mixing, ngram
from charrnn.evaluation.mixture import Gate
from charrnn.model import CharRNN

TEXT = "".join(f"def f{i % 23}(x):\n    return x * {i % 7} + g{i % 5}(x)\n\n"
               for i in range(900))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapt")
    cache = tmp_path_factory.mktemp("adapt-cache")
    (folder / "code.py").write_text(TEXT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE_DIR", str(cache))
        train_run(folder / "code.py", folder / "run", max_steps=150, lr=1e-2, batch_size=8,
                  seq_len=32, eval_every=75, model={"hidden_size": 48, "dropout": 0.0})
    return folder


def tiny_model(seed=0, kind="lstm"):
    torch.manual_seed(seed)
    return CharRNN(ModelConfig(vocab_size=6, model=kind, layers=2, hidden_size=16,
                               embedding_size=8, dropout=0.0)).eval()


def files_of(folder):
    """Each file's contents, by path (a safetensors file's tensors and metadata: its header
    lists the metadata in no fixed order)."""
    from safetensors import safe_open

    found = {}
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".safetensors":
            with safe_open(p, "numpy") as f:
                found[p.relative_to(folder).as_posix()] = (
                    sorted((f.metadata() or {}).items()),
                    {k: hashlib.sha256(f.get_tensor(k).tobytes()).hexdigest() for k in f.keys()})
        elif p.is_file():
            found[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_no_character_is_predicted_from_the_text_after_it(kind, monkeypatch):
    """Change everything after position i: the probability of every character up to i is
    unchanged, bit for bit, under dynamic evaluation (read in several parallel streams), under
    both count models and the match model, and under every mixture of them (whose gates read
    the models' records on the text before)."""
    monkeypatch.setattr(adapt, "STREAM", 300)  # several streams, each starting mid-text
    monkeypatch.setattr(adapt, "LEAD", 40)
    model = tiny_model(kind=kind)
    rng = np.random.default_rng(1)
    piece = rng.integers(0, 6, 250)  # (repeated: the match model has matches to make)
    text = np.concatenate([piece, rng.integers(0, 6, 250), piece, rng.integers(0, 6, 250),
                           piece[100:], piece, rng.integers(0, 6, 150)])
    train = rng.integers(0, 6, 3000)
    counted = ngram.kneser_ney(*ngram.count(train, 4), 4)
    gates = {mixture: Gate(tuple(tuple(rng.normal(0, 0.5, mixing.width(mixture)))
                                 for _ in range(mixing.MODELS[mixture] - 1)))
             for mixture in mixing.KINDS}

    def everything(ids):
        r = mixing.Readings(adapt.static(model, ids), ngram.score(counted, ids, 6),
                            adapt.read(model, ids, adapt.Adaptation(), workers=2),
                            ngram.reading(ids, 6, mixing.OWN_ORDER, mixing.OWN_DISCOUNT),
                            match_model.reading(ids, 6))
        found = {"adapting network": r.adapting.p, "counts": r.counts.p, "own": r.own.p,
                 "match": r.matches.p}
        for mixture, gate in gates.items():
            found[mixture] = gate.mix(*r.inputs(mixture))
        return found

    first = everything(text)
    assert (first["match"] > 0.5).sum() > 300  # (the repeats are matched)
    for i in (1, 63, 64, 299, 300, 301, 777, 1100):
        changed = text.copy()
        changed[i + 1:] = (changed[i + 1:] + 1 + rng.integers(0, 5, len(text) - i - 1)) % 6
        then = everything(changed)
        for name in first:  # p[j] is character j + 1's: characters 1 .. i
            assert np.array_equal(first[name][:i], then[name][:i]), (name, i)
            assert not np.array_equal(first[name], then[name]), name


def test_every_mixture_is_a_distribution_over_the_character_it_predicts():
    """A character's probability, tried for every character of the vocabulary in its place,
    sums to 1 under each mixture: nothing the gate reads (the models' records, the match's
    length) includes the character being predicted."""
    model = tiny_model()
    rng = np.random.default_rng(3)
    piece = rng.integers(0, 6, 120)
    text = np.concatenate([piece, rng.integers(0, 6, 80), piece, rng.integers(0, 6, 80)])
    counted = ngram.kneser_ney(*ngram.count(rng.integers(0, 6, 2000), 4), 4)
    gates = {mixture: Gate(tuple(tuple(rng.normal(0, 0.5, mixing.width(mixture)))
                                 for _ in range(mixing.MODELS[mixture] - 1)))
             for mixture in mixing.KINDS}
    for at in (5, 150, 250, 390):  # (250: within the repeat, where the match model predicts)
        total = dict.fromkeys(gates, 0.0)
        for c in range(6):
            ids = text[: at + 1].copy()
            ids[at] = c
            r = mixing.read(model, ids, counted, 6, adapting=True)
            for mixture, gate in gates.items():
                total[mixture] += gate.mix(*r.inputs(mixture))[-1]
        assert all(abs(v - 1) < 1e-6 for v in total.values()), (at, total)  # (float32 nets)


def test_the_match_model_predicts_what_followed_the_longest_earlier_match():
    text = "the cat sat down. the cat sat up. the cat sat dow"
    ids = np.array([ord(c) - 32 for c in text])
    m = match_model.reading(ids, 96, lengths=(4, 8, 16))
    # before the last "d": "cat sat " (8) was last followed by "u"; "up. the cat sat " (16) is new
    at = text.rindex("sat ") + 4
    assert m.length[at - 1] == 8 and m.p[at - 1] < 0.01
    # before the last "w": "t sat do" (8) was followed by "w"
    assert m.length[-1] == 8 and m.p[-1] == pytest.approx(1 - match_model.MISS)
    # with 12 among the lengths, the longer match is found: "the cat sat " (12)
    long = match_model.reading(ids, 96, lengths=(4, 8, 12))
    assert long.length[at - 1] == 12
    assert m.length[0] == 0 and m.p[0] == pytest.approx(1 / 96)  # nothing earlier


def test_parallel_streams_read_as_one_stream_does_within_their_own_part(monkeypatch):
    """How many threads read the streams changes nothing; a stream's part reads as a fresh
    learner reads it after the same lead-in."""
    monkeypatch.setattr(adapt, "STREAM", 256)
    monkeypatch.setattr(adapt, "LEAD", 32)
    model = tiny_model()
    ids = np.random.default_rng(2).integers(0, 6, 1000)
    one, two = adapt.read(model, ids, workers=1), adapt.read(model, ids, workers=2)
    assert np.array_equal(one.p, two.p) and np.array_equal(one.entropy, two.entropy)
    learner = adapt.Learner(model)
    with adapt.one_thread():  # (as the streams run)
        learner.state = adapt._lead_state(model, ids[256 - 32: 256])
        assert np.array_equal(learner.read(ids[256: 513]).p, one.p[256: 512])


def test_learning_from_a_text_makes_it_likelier_and_leaves_the_model_alone():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = np.tile([0, 1, 2, 3, 4, 5, 5, 4], 200)
    adapted = adapt.learn(model, ids)
    loss = lambda m: -np.log(adapt.static(m, ids).p).mean()  # noqa: E731
    assert loss(adapted) < loss(model) - 0.05  # one reading: 1.82 -> 1.73 nats
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert adapted is not model


def test_the_counts_of_the_text_read_so_far_are_those_of_its_beginning():
    ids = np.random.default_rng(3).integers(0, 4, 800)
    ids[::3] = 2
    scores = ngram.reading(ids, 4, 5, 0.6)
    for i in (1, 2, 7, 100, 799):
        p, depth, _, total = ngram.distribution(ngram.own_model(ids[:i], 5, 0.6), ids[:i], 4)
        assert p.sum() == pytest.approx(1.0)
        assert p[ids[i]] == pytest.approx(scores.p[i - 1], abs=1e-12)
        assert (depth, total) == (scores.depth[i - 1], scores.total[i - 1])


def test_eval_shows_every_row_with_what_it_saw_and_whether_it_adapts(trained, tmp_path):
    held = tmp_path / "held.py"
    held.write_text(TEXT[:3000].replace("f1", "f9"))
    result = invoke("eval", trained / "run", held, "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["rows"]}
    assert {"charrnn", "charrnn, adapting", "charrnn + counts", "charrnn + counts, adapting",
            "10-gram", "uniform", "bz2", "lzma", "zlib"} <= set(rows)
    for r in rows.values():
        assert {"name", "nats", "adapts", "uses_training_text"} <= set(r)
        assert r["nats"] > 0
    assert rows["charrnn, adapting"]["adapts"] and not rows["charrnn"]["adapts"]
    assert rows["bz2"]["adapts"] and not rows["bz2"]["uses_training_text"]
    assert rows["10-gram"]["uses_training_text"] and not rows["10-gram"]["adapts"]
    # a text with a name the training text never had: learning as it reads helps
    assert rows["charrnn, adapting"]["nats"] < rows["charrnn"]["nats"]
    quick = json.loads(invoke("eval", trained / "run", held, "--json", "--no-adapt").stdout)
    assert not any(r["adapts"] and r["uses_training_text"] for r in quick["rows"])
    table = invoke("eval", trained / "run", held)
    assert "charrnn + counts, adapting" in table.stdout and "saw training" not in table.stderr


def test_what_an_evaluation_reads_never_depends_on_the_text_it_evaluated(trained, tmp_path,
                                                                         monkeypatch):
    """The mixtures' gates and the counts come from the run's own texts: evaluating one file
    first leaves the cache as evaluating another would, and a later file's figures as they are
    when nothing was evaluated before."""
    texts = []
    for n, (a, b) in enumerate((("f1", "f8"), ("g2", "f2"), ("x *", "x +"))):
        texts.append(tmp_path / f"t{n}.py")
        texts[-1].write_text(TEXT[1000 * n: 1000 * n + 4000].replace(a, b))
    seen = []
    for first in (texts[0], texts[1]):
        cache = tmp_path / f"cache-{first.stem}"
        monkeypatch.setenv("CHARRNN_CACHE_DIR", str(cache))
        assert invoke("eval", trained / "run", first, "--json").exit_code == 0
        kept = {k: v for k, v in files_of(cache).items() if k.startswith("counts/")}
        later = json.loads(invoke("eval", trained / "run", texts[2], "--json").stdout)["rows"]
        seen.append((kept, later))
    fresh = tmp_path / "cache-fresh"
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(fresh))
    alone = json.loads(invoke("eval", trained / "run", texts[2], "--json").stdout)["rows"]
    assert seen[0][0] == seen[1][0] and len(seen[0][0]) == 2  # the counts and the gates
    assert seen[0][1] == seen[1][1] == alone


def test_adapt_and_mix_leave_the_run_as_it_was_and_plain_sampling_as_it_was(trained):
    before = files_of(trained / "run")
    prime = TEXT[:400].replace("f1", "f8")
    for flags in (["--adapt"], ["--mix"], ["--adapt", "--mix"]):
        result = invoke("sample", trained / "run", "--prime", prime, "--length", "200",
                        "--seed", "3", *flags)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(prime) and len(result.stdout) == len(prime) + 200
    assert files_of(trained / "run") == before
    plain = invoke("sample", trained / "run", "--prime", prime, "--length", "300", "--seed", "3")
    adapted = invoke("sample", trained / "run", "--prime", prime, "--length", "300", "--seed",
                     "3", "--adapt")
    assert plain.stdout != adapted.stdout


def test_sampling_without_adapt_or_mix_is_unchanged_bit_for_bit():
    """The text a seed gave before dynamic evaluation and mixtures existed (recorded then)."""
    from test_sample import model, text

    recorded = {"lstm": "a1d9d50579163e61eb9af0b44cd4f307bdc4577e4b7e07a148c225ded033ec3a",
                "gru": "dc9d65abd4d3d2e2962666941c6883c3f603659ae5800e28342675afab1c8662"}
    for kind, digest in recorded.items():
        sample = text(model(kind, 2, 32), 7, length=400, temperature=1.0)
        assert hashlib.sha256(sample.encode()).hexdigest() == digest, kind


def test_adapt_without_a_prime_is_one_line(trained):
    result = invoke("sample", trained / "run", "--adapt", catch_exceptions=True)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "--prime" in result.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "oversized"])
def test_a_damaged_counts_file_is_one_line_and_the_run_still_samples(trained, damage):
    run = trained / "run"
    assert invoke("sample", run, "--mix", "--length", "50", "--seed", "1").exit_code == 0
    model, vocab, config = checkpoint.load(run)
    path = counts.path_of(counts.key(config, vocab))
    whole = path.read_bytes()
    try:
        if damage == "garbage":
            path.write_bytes(b"\x00not a counts file" * 100)
        elif damage == "truncated":
            path.write_bytes(whole[: len(whole) // 2])
        else:
            with open(path, "ab") as f:
                f.truncate(counts.MAX_BYTES + 1)
        result = invoke("sample", run, "--mix", "--length", "50", "--seed", "1")
        plain = invoke("sample", run, "--length", "50", "--seed", "1")
    finally:
        path.write_bytes(whole)
    assert result.exit_code == 0, result.output
    assert result.stdout == plain.stdout  # drawn from the network alone
    warning = [line for line in result.stderr.splitlines() if line]
    assert len(warning) == 1 and "without the mixture" in warning[0], result.stderr


def test_a_planted_gate_out_of_range_is_ignored():
    assert Gate.from_json([[1e9, 0, 0, 0, 0]], 2, 5) is None
    assert Gate.from_json([[1, 0, 0, 0]], 2, 5) is None
    assert Gate.from_json([[1.0, 0, 0, 0, True]], 2, 5) is None
    assert Gate.from_json([[1.0, 0, 0, 0, 0.5]], 2, 5).coefficients == ((1, 0, 0, 0, 0.5),)


def test_the_python_api_adapts_and_mixes(trained, tmp_path):
    import charrnn

    run = charrnn.load(trained / "run")
    prime = TEXT[:300]
    assert len(run.sample(80, prime=prime, seed=2, adapt=True, mix=True)) == 80
    held = tmp_path / "held.py"
    held.write_text(TEXT[:2000])
    names = [r["name"] for r in run.eval(held, adapt=False)["rows"]]
    assert "charrnn + counts" in names and "charrnn, adapting" not in names


def test_adapt_without_the_training_text_says_so_and_samples_from_the_adapted_network(
        trained, tmp_path, monkeypatch):
    """The prime's counts are mixed in by a gate fitted on the run's validation text: a run
    whose corpus is not on this machine (and a cache that never fitted it) samples from the
    adapted network alone, saying so in one line."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    config = json.loads((run / "config.json").read_text())
    config["corpus"]["path"] = str(tmp_path / "gone.py")
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(tmp_path / "fresh-cache"))
    result = invoke("sample", run, "--prime", TEXT[:300], "--adapt", "--length", "100",
                    "--seed", "1")
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 400
    said = [line for line in result.stderr.splitlines() if line]
    assert len(said) == 1 and "without the mixture" in said[0] and "--adapt" in said[0], said
