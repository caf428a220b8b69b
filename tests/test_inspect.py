import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke, train_run
from rich.console import Console

from charrnn import checkpoint
from charrnn.config import InspectConfig
from charrnn.interp import html_page as page
from charrnn.interp import inspection, probes, views
from charrnn.interp import terminal as render
from charrnn.model import CharRNN


def quoted_text(n_words, seed):
    """Lower-case words outside double quotes, upper-case inside: the next character depends
    on whether the text is inside quotes, so a good model must track it."""
    rng = random.Random(seed)
    out, inside = [], False
    for _ in range(n_words):
        word = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6)))
        if rng.random() < 0.2:
            out.append('"')
            inside = not inside
        out.append((word.upper() if inside else word) + " ")
    return "".join(out)


@pytest.fixture(scope="module")
def quote_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quotes")
    corpus = folder / "quotes.txt"
    corpus.write_text(quoted_text(6000, 0))
    train_run(corpus, folder / "run", model={"hidden_size": 32, "layers": 2},
              max_steps=300, lr=1e-2, batch_size=16, seq_len=64, eval_every=100)
    return folder / "run"


def test_lang_says_which_language_the_probes_read(quote_run):
    """The probes read the text as the language detected, or as --lang says (here: prose,
    read as C, whose comment probe then finds the slashes and stars of C)."""
    detected = invoke("inspect-cells", quote_run, "--probe", "comment", "--length", 400,
                      "--color", "never")
    given = invoke("inspect-cells", quote_run, "--probe", "comment", "--length", 400,
                   "--color", "never", "--lang", "c")
    assert detected.exit_code == given.exit_code == 0, detected.output + given.output
    assert "probes read the text as prose (detected; --lang to say otherwise)" in detected.stdout
    assert "probes read the text as c" in given.stdout and "(detected" not in given.stdout


def best_quote_r(model, vocab):
    ins = inspection.inspect(model, vocab, quoted_text(400, 1))
    r = probes.correlations(ins.columns("c"), probes.quote(ins.text))
    return ins, r


def test_a_quote_tracking_cell_is_discovered(quote_run):
    model, vocab, _ = checkpoint.load(quote_run)
    ins, r = best_quote_r(model, vocab)
    assert np.abs(r).max() > 0.8
    built = views.build(ins, InspectConfig(probes=["quote"]))
    best = built.views[0]
    k = int(np.argmax(np.abs(r)))
    assert best.title.startswith(f"layer {k // 32 + 1} cell {k % 32} ")
    # the control: the same network untrained has no such cell
    torch.manual_seed(1337)
    untrained = CharRNN(model.config).eval()
    assert np.abs(best_quote_r(untrained, vocab)[1]).max() < 0.8


def bracket_text(n_words, seed):
    """Words of the same letters inside and outside brackets: only what may come next differs
    (a ")" inside, a "(" outside), so the state is latent: no single character shows it."""
    rng = random.Random(seed)
    out, inside = [], False
    for _ in range(n_words):
        out.append("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 6))) + " ")
        if rng.random() < 0.3:
            out.append(")" if inside else "(")
            inside = not inside
    return "".join(out)


@pytest.fixture(scope="module")
def bracket_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("brackets")
    (folder / "brackets.txt").write_text(bracket_text(8000, 0))
    train_run(folder / "brackets.txt", folder / "run", model={"hidden_size": 32, "layers": 1},
              max_steps=800, lr=1e-2, batch_size=16, seq_len=64, eval_every=800)
    return folder / "run"


def test_a_layer_probe_knows_the_planted_feature_and_the_untrained_control_does_not(
        bracket_run):
    from charrnn.interp import layerprobe

    model, vocab, _ = checkpoint.load(bracket_run)
    text = bracket_text(3000, 2)
    feature = (probes.depth(text) > 0).astype(np.float32)
    trained = layerprobe.probe_layers(inspection.inspect(model, vocab, text).states["c"], feature)
    torch.manual_seed(1337)
    untrained = CharRNN(model.config).eval()
    control = layerprobe.probe_layers(inspection.inspect(untrained, vocab, text).states["c"],
                                      feature)
    assert trained[0].metric == "balanced accuracy"
    assert trained[0].score > 0.9 and control[0].score < trained[0].score - 0.15
    assert [size for size, _, _ in trained[0].path][:3] == [1, 2, 3]
    said = layerprobe.score_line("depth", trained[0])
    assert said.startswith("layer 1 knows depth to ") and "alone" in said


def test_ablating_the_found_cell_raises_the_loss_where_the_feature_is_used(bracket_run):
    from charrnn.interp import ablation

    model, vocab, _ = checkpoint.load(bracket_run)
    text = bracket_text(500, 3)
    feature = (probes.depth(text) > 0).astype(np.float32)
    r = probes.correlations(inspection.inspect(model, vocab, text).columns("c"), feature)
    found, other = int(np.argmax(np.abs(r))), int(np.argmin(np.abs(r)))
    rise = ablation.ablate(model, vocab, text, {0: [found]})
    # the cell that follows the brackets matters; the one least related to them far less
    assert rise.mean() > 0.05
    assert rise.mean() > 3 * ablation.ablate(model, vocab, text, {0: [other]}).mean()
    # and it matters where the bracket state decides what comes next: after a word
    after_word = np.array([ch == " " for ch in text[:-1]])
    assert rise[after_word].mean() > rise[~after_word].mean()
    page = bracket_run.parent / "b.txt"
    page.write_text(text)
    result = invoke("inspect-cells", bracket_run, "--text", page, "--ablate", f"1:{found}",
                    "--probe", "depth", "--color", "never")
    assert result.exit_code == 0, result.output
    assert f"holding 1:{found} at their mean changes the loss by +" in result.stdout
    assert "inside probe depth:" in result.stdout and "(red: it rose)" in result.stdout
    bad = invoke("inspect-cells", bracket_run, "--ablate", "1:99", catch_exceptions=True)
    assert bad.exit_code == 1 and "the model has layers 1 to 1 and cells 0 to 31" in bad.stderr


def test_a_rare_feature_is_found_by_a_threshold_fitted_to_it_and_scored_by_auc():
    """A feature on 2% of the characters (as inside-a-string is in kernel C), which one cell of
    the layer carries through noise: a threshold at 0 on the -1/+1 fit says "never" (0.50); the
    probe's threshold, chosen on the fitted part, finds it, and the AUC needs no threshold. A
    layer of noise stays at chance on both."""
    from charrnn.interp import layerprobe

    rng = np.random.default_rng(0)
    n, h = 20_000, 32
    feature = (rng.random(n) < 0.02).astype(np.float32)
    knows = rng.normal(size=(n, h))
    knows[:, 5] += 2.5 * feature
    noise = rng.normal(size=(n, h))
    found, blind = layerprobe.probe_layers(np.stack([knows, noise]), feature)
    assert 0.01 < found.positives / found.held < 0.03  # the count the score rests on
    assert found.score > 0.85 and found.auc > 0.93
    assert found.path[0][1] == [5] and found.path[0][2] > 0.85
    assert 0.4 < blind.score < 0.6 and 0.4 < blind.auc < 0.6
    said = layerprobe.score_line("string", found)
    assert f"ROC AUC {found.auc:.2f}" in said and f"on at {found.positives:,} of" in said


def test_the_layer_probe_scores_a_numeric_feature_by_held_out_r2():
    from charrnn.interp import layerprobe

    rng = np.random.default_rng(0)
    states = rng.normal(size=(1, 2000, 20))
    feature = 3 * states[0, :, 4] - 2 * states[0, :, 7] + 0.1 * rng.normal(size=2000)
    [score] = layerprobe.probe_layers(states, feature)
    assert score.metric == "R^2" and score.score > 0.99 and score.accuracy is None
    assert sorted(score.path[1][1]) == [4, 7] and score.path[1][2] > 0.99
    assert score.path[0][1] == [4]  # the larger weight enters the L1 path first


def paint(color_system, text="ab\ncd", values=(-1.0, 0.0, 1.0, 0.5, -0.5), width=40):
    out = io.StringIO()
    console = Console(file=out, color_system=color_system, force_terminal=color_system is not None,
                      width=width, no_color=color_system is None)
    render.heatmap(console, render.View("layer 1 cell 0", np.asarray(values), -1.0, 1.0), text)
    return out.getvalue()


@pytest.mark.parametrize("system, codes", [
    ("truecolor", ["48;2;202;0;32", "48;2;5;113;176"]),  # -1 red, +1 blue, exactly
    ("256", ["48;5;160", "48;5;25"]),
    ("standard", ["41", "4[46]", "10?7"]),  # red, blue (or cyan), white of the 16 colours
])
@pytest.mark.slow
def test_heatmap_paints_under_each_colour_system(system, codes):
    # a fresh process per colour system: Rich caches a style's escape codes process-wide
    script = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
             f"from test_inspect import paint; print(paint({system!r}), end='')"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    for code in codes:
        assert re.search(r"\x1b\[(?:[0-9]+;)*(?:" + code + r")m", out), (code, out)
    assert "↵" in out and "▁" not in out  # the block row is only for no colour


@pytest.mark.slow
def test_no_color_is_honoured_even_with_color_always(quote_run):
    # the colour codes of a painted character: a background, in any of the colour systems
    background = re.compile(r"\x1b\[(?:[0-9]+;)*(?:4[0-7]|10[0-7]|48;[0-9;]+)m")
    command = [sys.executable, "-m", "charrnn", "inspect-cells", str(quote_run), "--length",
               "80", "--color", "always"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    painted = subprocess.run(command, capture_output=True, text=True, env=env).stdout
    assert background.search(painted)  # the control: without NO_COLOR, colours
    plain = subprocess.run(command, capture_output=True, text=True,
                           env={**env, "NO_COLOR": "1"}).stdout
    assert not background.search(plain)
    assert any(ch in plain for ch in render.BLOCKS[1:])  # the block rows stand in for colour


def test_without_colour_block_rows_show_strong_and_weak_values():
    out = paint(None, text="abcde", values=(-1.0, -0.2, 0.0, 0.3, 1.0))
    assert "\x1b" not in out
    lines = out.splitlines()
    text_row = lines.index("abcde")
    blocks = lines[text_row + 1]
    assert blocks[0] == " " and blocks[-1] == "█" and blocks[2] == "▄"
    assert render.BLOCKS.index(blocks[1]) < render.BLOCKS.index(blocks[3])


def test_hostile_text_is_shown_never_interpreted():
    text = "[bold red]x[/] \x1b[31mred\x00 <b>"
    for system in ("truecolor", None):
        out = paint(system, text=text, values=np.zeros(len(text)))
        shown = re.sub(r"\x1b\[[0-9;]*m", "", out)  # what Rich itself added
        assert "[bold red]x[/]" in shown and "␛[31mred␀" in shown
        assert "\x1b" not in shown and "\x00" not in shown


def test_wrapping_keeps_block_rows_aligned_with_text():
    text = "x" * 25 + "\n" + "y" * 5
    out = paint(None, text=text, values=np.linspace(-1, 1, len(text)), width=10)
    lines = out.splitlines()
    rows = lines[lines.index("x" * 10):][:8]
    assert rows[0::2] == ["x" * 10, "x" * 10, "xxxxx↵", "yyyyy"]
    assert [len(r) for r in rows[1::2]] == [10, 10, 6, 5]  # one glyph under each character


HOSTILE = 'abc "</script><script>alert(1)</script>" & <!-- x \x1b[31m [b]y[/b] \u202e'


def hostile_page(title="<title>"):
    n = len(HOSTILE)
    view = render.View("<i>view</i>", np.linspace(-1, 1, n), -1.0, 1.0)
    top = [["<", "&", "\n", "\x00", "a"]] * n
    return page.build(title, HOSTILE, [view], top, np.full((n, 5), 0.2), ["<b>summary</b>"])


def page_data(doc):
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', doc, re.S)
    return json.loads(found.group(1))


def test_html_escapes_hostile_text_and_needs_no_network():
    doc = hostile_page()
    assert "<script>alert" not in doc and "<!-- x" not in doc and "<i>" not in doc
    assert "&lt;title&gt;" in doc and "&lt;b&gt;summary&lt;/b&gt;" in doc
    assert "\x1b" not in doc and "\u202e" not in doc
    assert not re.search(r"""(src|href)\s*=|https?://|@import|url\(""", doc)
    assert "".join(page_data(doc)["glyphs"]).startswith('abc "</script><script>alert(1)')


def test_html_carries_the_models_top5_predictions(quote_run):
    model, vocab, _ = checkpoint.load(quote_run)
    ins = inspection.inspect(model, vocab, quoted_text(30, 3))
    data = page_data(views.html("run", views.build(ins, InspectConfig()), ins))
    assert len(data["top"]) == len(ins.text) and all(len(t) == 5 for t in data["top"])
    probs = [p for _, p in data["top"][0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    i = 10
    best = vocab.chars[int(np.argmax(ins.next_probs[i]))]
    assert data["top"][i][0][0] == render.glyph(best)



def test_inspect_cells_cli_end_to_end(quote_run, tmp_path):
    default = invoke("inspect-cells", quote_run, "--length", 300, "--color", "never")
    assert default.exit_code == 0, default.output
    assert default.stdout.count("(one of the most active cells)") == 3
    chosen = invoke("inspect-cells", quote_run, "--layer", 1, "--cells", "3,5", "--length", 100,
                    "--color", "never")
    assert "layer 1 cell 3 · tanh(c)" in chosen.stdout and "layer 1 cell 5" in chosen.stdout
    text = tmp_path / "t.txt"
    text.write_text(quoted_text(100, 7))
    probed = invoke("inspect-cells", quote_run, "--text", text, "--probe", "quote",
                    "--probe-regex", "[A-Z]+", "--top", 2, "--color", "never", "--state", "h")
    assert probed.exit_code == 0
    assert "Probe quote" in probed.stdout and "best for probe quote" in probed.stdout
    assert "regex [A-Z]+" in probed.stdout
    flat = invoke("inspect-cells", quote_run, "--text", text, "--probe", "if-paren",
                  "--color", "never")
    assert flat.exit_code == 0 and "probe if-paren" in flat.stdout
    assert "no cell can follow it" in flat.stdout and "best for probe" not in flat.stdout
    gates = invoke("inspect-cells", quote_run, "--gates", "--length", 200, "--color", "never")
    assert "Gate saturation" in gates.stdout and "forget" in gates.stdout
    surprise = invoke("inspect-cells", quote_run, "--surprisal", "--length", 300,
                      "--color", "never", "--html", tmp_path / "s.html")
    assert re.search(r"\d\.\d{3} bits per character", surprise.stdout)
    assert (tmp_path / "s.html").read_text().startswith("<!DOCTYPE html>")
    primed = invoke("inspect-cells", quote_run, "--prime", 'ab "CD', "--length", 50,
                    "--seed", 1, "--color", "never")
    assert primed.exit_code == 0 and 'ab·"CD' not in primed.stdout
    listed = invoke("inspect-cells", quote_run, "--list-probes")
    assert all(name in listed.stdout for name in probes.PROBES)


def test_match_finds_where_a_planted_pattern_of_activity_recurs():
    from charrnn.interp import match

    rng = np.random.default_rng(0)
    text_states = rng.normal(0, 0.1, size=(3000, 64))
    phrase = np.zeros((12, 64))
    phrase[:, [5, 9, 40]] = rng.choice([-1.0, 1.0], size=(12, 3))  # three cells carry it
    for start in (700, 2100):
        text_states[start: start + 12, [5, 9, 40]] = phrase[:, [5, 9, 40]]
    cells, found = match.find(phrase, text_states)
    assert {5, 9, 40} <= set(cells.tolist())
    assert sorted(m.start for m in found[:2]) == [700, 2100]
    assert all(abs(a.start - b.start) >= 12 for a in found for b in found if a is not b)


def test_match_lists_stretches_on_the_command_line(quote_run):
    result = invoke("inspect-cells", quote_run, "--match", '"ABC', "--length", 600,
                    "--color", "never")
    assert result.exit_code == 0, result.output
    assert "--match '\"ABC': its most active cells of tanh(c)" in result.stdout
    assert result.stdout.count("  at character ") == 5


@pytest.mark.slow
def test_a_sparse_dictionary_recovers_planted_sparse_features():
    from charrnn.interp import features

    rng = np.random.default_rng(0)
    hidden, planted, n = 32, 24, 12_000
    truth = rng.normal(size=(planted, hidden))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    codes = np.zeros((n, planted))
    for i in range(n):  # two features at a time, of random strength
        codes[i, rng.choice(planted, 2, replace=False)] = rng.exponential(1.0, 2) + 0.5
    states = codes @ truth + 0.01 * rng.normal(size=(n, hidden))
    d = features.train_dictionary(states, features=64, steps=2500)
    cosine = truth @ d.w_dec.numpy()  # (planted, learned): the decoder's columns are unit
    assert cosine.max(axis=1).min() > 0.95  # every planted feature has a learned twin
    assert (d.encode(states) > 0).sum(axis=1).mean() < 8  # and the codes are sparse


def test_features_are_learned_listed_saved_and_painted(quote_run):
    result = invoke("features", quote_run, "--chars", 3000, "--steps", 300, "--top", 2,
                    "--color", "never")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("feature ") and "follows probe" in result.stdout
    saved = quote_run / "features-l2-h.safetensors"
    assert saved.exists() and saved.with_suffix(".json").exists()
    painted = invoke("inspect-cells", quote_run, "--feature", 0, "--length", 200,
                     "--color", "never")
    assert painted.exit_code == 0, painted.output
    assert "feature 0 of layer 2 (h): how strongly it fires" in painted.stdout
    bad = invoke("inspect-cells", quote_run, "--feature", 9999, catch_exceptions=True)
    assert bad.exit_code == 1 and "--feature 9999 does not exist" in bad.stderr
    missing = invoke("inspect-cells", quote_run, "--feature", 0, "--layer", 1,
                     catch_exceptions=True)
    assert missing.exit_code == 1 and "learn the features first" in missing.stderr
