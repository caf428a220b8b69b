"""The Python API as a notebook user calls it: train, load, sample, stream, inspect and its
questions, eval and info, without the command line; errors raised as CharrnnError, nothing
printed."""

import re

import numpy as np
import pytest
import torch
from conftest import invoke

import charrnn
from charrnn import CharrnnError

TEXT = ("def area(w, h):\n    # the area of a box\n    s = '<b>' & h\n"
        "    return w * h  # 'done'\n\n" * 60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    corpus = folder / "code.py"
    corpus.write_text(TEXT)
    run = charrnn.train(corpus, out=folder / "run", max_steps=30, eval_every=15,
                        hidden_size=32, embedding_size=8, batch_size=8, seq_len=32, seed=3,
                        threads=1)
    return run


def test_train_returns_a_run_and_prints_nothing(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    run = charrnn.train(str(corpus), out=tmp_path / "run", max_steps=4, eval_every=2,
                        hidden_size=16, layers=2, model="gru", threads=1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert isinstance(run, charrnn.Run)
    assert (run.model.config.hidden_size, run.model.config.layers,
            run.model.config.model) == (16, 2, "gru")
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert run.config["train"]["max_steps"] == 4


@pytest.mark.slow
def test_a_time_setting_is_parsed_as_the_option_is(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    run = charrnn.train(corpus, out=tmp_path / "run", time="3s", hidden_size=16, threads=1)
    assert run.config["train"]["time"] == 3.0


def test_load_gives_the_run_that_train_returned(trained):
    again = charrnn.load(trained.path)
    for name, tensor in trained.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
    assert again.vocab.chars == trained.vocab.chars
    assert not again.model.training


def test_sample_is_text_of_the_length_asked_and_seeded(trained):
    one = trained.sample(200, temperature=0.8, seed=5)
    assert isinstance(one, str) and len(one) == 200
    assert set(one) <= set(TEXT)
    assert trained.sample(200, temperature=0.8, seed=5) == one
    assert trained.sample(200, temperature=0.8, seed=6) != one


def test_stream_yields_what_sample_returns_and_the_cli_prints(trained):
    pieces = list(trained.stream(150, prime="def ", seed=2))
    assert all(isinstance(p, str) for p in pieces) and len(pieces) > 1
    text = "".join(pieces)
    assert text == trained.sample(150, prime="def ", seed=2)
    printed = invoke("sample", str(trained.path), "--length", "150", "--prime", "def ",
                     "--seed", "2", "--temp", "0.8").stdout
    assert printed == "def " + text


def test_stream_stops_at_the_stop_string(trained):
    text = trained.sample(2000, stop="\n", seed=1, temperature=0.5)
    assert text.endswith("\n") and text.count("\n") == 1


def test_inspect_holds_every_state_as_numpy_arrays(trained):
    text = "def f(w):\n    return w  # x\n"
    ins = trained.inspect(text)
    assert ins.text == text
    assert set(ins.states) >= {"c", "h", "input", "forget", "candidate", "output"}
    h = ins.states["h"]
    assert isinstance(h, np.ndarray) and h.shape == (2, len(text), 32)  # (layer, char, cell)
    assert np.all(np.abs(h) <= 1)


def test_inspect_without_text_reads_the_validation_text(trained):
    ins = trained.inspect(length=100)
    assert len(ins.text) == 100 and ins.text in TEXT * 2


def test_probe_ranks_cells_by_their_correlation(trained):
    ins = trained.inspect(TEXT[:600])
    answer = ins.probe("comment", top=5)
    rs = [abs(r) for _, _, r in answer["cells"]]
    assert len(rs) == 5 and rs == sorted(rs, reverse=True)
    assert all(0 <= r <= 1 for r in rs)
    assert [score.layer for score in answer["layers"]] == [1, 2]


def test_ablate_gives_a_loss_change_per_predicted_character(trained):
    text = TEXT[:300]
    ins = trained.inspect(text)
    rise = ins.ablate("1:0,1:1")
    assert rise.shape == (len(text) - 1,)
    assert np.isfinite(rise).all() and np.abs(rise).sum() > 0


def test_match_finds_the_phrase_where_it_occurs(trained):
    ins = trained.inspect(TEXT[:800])
    phrase = "return w * h"
    found = ins.match(phrase)
    distances = [m.distance for m in found]
    assert found and distances == sorted(distances)
    starts = sorted(m.start for m in found)
    assert all(b - a >= len(phrase) for a, b in zip(starts, starts[1:]))  # never overlapping
    assert all(0 <= s <= len(ins.text) - len(phrase) for s in starts)
    itself = trained.inspect(phrase).match(phrase)[0]  # a phrase is closest to itself
    assert itself.start == 0 and itself.distance == pytest.approx(0, abs=1e-6)


def test_an_inspection_shows_itself_in_a_notebook_escaped(trained):
    ins = trained.inspect("w = '<b>' & h\n")
    page = ins._repr_html_()
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "<b>" not in page  # the text goes into the page as escaped JSON
    assert '"\\u003c", "b", "\\u003e"' in page


def test_eval_compares_the_model_with_baselines(trained):
    result = trained.eval()
    names = [row["name"] for row in result["rows"]]
    assert "uniform" in " ".join(names).lower()
    for row in result["rows"]:
        assert row["bits"] == pytest.approx(row["nats"] / np.log(2), rel=1e-3)


def test_info_tells_what_the_run_is(trained):
    info = trained.info()
    assert info["progress"]["step"] == 30
    assert info["model"]["hidden_size"] == 32


@pytest.mark.parametrize("call, says", [
    (lambda run: run.sample(10, prime="Z§"), "never saw"),
    (lambda run: run.sample(10, temperature=-1), "--temperature must be 0 or more"),
    (lambda run: run.inspect("area", ask=None).probe("sarcasm"), "unknown --probe"),
    (lambda run: run.inspect("def", length=10).ablate("9:0"), "the model has layers 1 to 2"),
])
def test_mistakes_are_raised_as_charrnn_errors_with_the_cli_line(trained, capsys, call, says):
    with pytest.raises(CharrnnError, match=says):
        call(trained)
    assert capsys.readouterr().out == ""


def test_train_refuses_unknown_settings_and_bad_values(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    with pytest.raises(CharrnnError, match="unknown setting hidden"):
        charrnn.train(corpus, out=tmp_path / "run", hidden=8)
    with pytest.raises(CharrnnError, match="--time"):
        charrnn.train(corpus, out=tmp_path / "run2", time="soon")
    with pytest.raises(CharrnnError, match="does not exist"):
        charrnn.load(tmp_path / "nowhere")
    assert not (tmp_path / "run").exists()


WRONG_TRAIN = {  # the argument, and what the line says: the setting's own name
    "seed=1.5": (dict(seed=1.5), "--seed must be a whole number"),
    "max_steps='10'": (dict(max_steps="10"), "--max-steps must be a whole number"),
    "threads=-1": (dict(threads=-1), "--threads must be"),
    "threads=2.5": (dict(threads=2.5), "--threads must be"),
    "device=0": (dict(device=0), "--device must be text"),
    "amp='yes'": (dict(amp="yes"), "--amp must be true or false"),
    "hidden_size=True": (dict(hidden_size=True), "hidden-size must be"),
    "include='*.c'": (dict(include="*.c"), "--include must be a list of texts"),
    "out=5": (dict(out=5), "out must be a path"),
    "overwrite='yes'": (dict(overwrite="yes"), "overwrite must be True or False"),
    "out=/proc/x": (dict(out="/proc/x/run"), "/proc/x"),
}


@pytest.mark.parametrize("wrong", list(WRONG_TRAIN))
def test_train_with_an_argument_of_the_wrong_type_is_one_charrnn_error(tmp_path, wrong):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT)
    given, says = WRONG_TRAIN[wrong]
    with pytest.raises(CharrnnError, match=re.escape(says)):
        charrnn.train(corpus, **{"out": tmp_path / "run", "max_steps": 2, **given})


WRONG_CALLS = {
    "load(5)": (lambda run: charrnn.load(5), "path must be a path"),
    "load(device='bogus')": (lambda run: charrnn.load(run.path, device="bogus"),
                             "device must be cpu, cuda, cuda:N or mps"),
    "load(device=3)": (lambda run: charrnn.load(run.path, device=3), "device must be"),
    "sample(length=2.5)": (lambda run: run.sample(2.5), "--length must be a whole number"),
    "sample(prime=5)": (lambda run: run.sample(5, prime=5), "prime must be text"),
    "sample(top_k=2.0)": (lambda run: run.sample(5, top_k=2.0), "--top-k must be a whole"),
    "sample(seed='1')": (lambda run: run.sample(5, seed="1"), "--seed must be a whole number"),
    "sample(stop=1)": (lambda run: run.sample(5, stop=1), "stop must be text"),
    "inspect(max_memory=-1)": (lambda run: run.inspect("area", max_memory=-1),
                               "max_memory must be a size of 1 byte or more"),
    "inspect(length='9')": (lambda run: run.inspect(length="9"), "length must be a whole"),
    "inspect(text=5)": (lambda run: run.inspect(5), "text must be text"),
    "probe(lang='bogus')": (lambda run: run.inspect("area").probe("depth", lang="bogus"),
                            "lang must be c, python, latex or prose"),
    "probe(top=0)": (lambda run: run.inspect("area").probe("depth", top=0), "top must be 1"),
    "probe(name=3)": (lambda run: run.inspect("area").probe(3), "name must be a probe"),
    "ablate(17)": (lambda run: run.inspect("area").ablate(17), "cells must be text"),
    "eval(adapt='no')": (lambda run: run.eval(adapt="no"), "adapt must be True or False"),
}


@pytest.mark.parametrize("wrong", list(WRONG_CALLS))
def test_a_call_with_an_argument_of_the_wrong_type_is_one_charrnn_error(trained, wrong):
    call, says = WRONG_CALLS[wrong]
    with pytest.raises(CharrnnError, match=re.escape(says)):
        call(trained)
