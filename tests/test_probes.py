import numpy as np
import pytest

from charrnn.errors import CharrnnError
from charrnn.interp import probes


def on(text, feature):
    """The characters where a feature is non-zero, as a string (for readable asserts)."""
    return "".join(ch for ch, f in zip(text, feature) if f)


def test_quote_is_on_from_an_opening_quote_to_its_closing_one():
    text = 'he said "hi there" and "bye"'
    f = probes.quote(text)
    assert on(text, f) == '"hi there' + '"bye'
    assert f[text.index("said")] == 0 and f[text.index("hi")] == 1


def test_depth_counts_nested_brackets_and_never_goes_negative():
    text = "a(b[c{d}e]f)g) (h)"
    d = probes.depth(text)
    assert d[text.index("a")] == 0 and d[text.index("b")] == 1 and d[text.index("c")] == 2
    assert d[text.index("d")] == 3 and d[text.index("g")] == 0
    assert d.min() == 0 and d[text.index("h")] == 1


def test_comment_and_string_spans_for_c_python_and_latex():
    c = '#include <stdio.h>\nx = 1; /* note "a" */ y = "s/*"; // tail\n#define N 3\nz'
    assert on(c, probes.comment(c, "c")) == '/* note "a" */// tail'
    assert on(c, probes.in_string(c, "c")) == '"s/*"'
    assert on(c, probes.preprocessor(c, "c")) == "#include <stdio.h>#define N 3"
    py = 'a = \'#no\' # yes\nb = """doc # not a comment\n""" + f"x"\n'
    assert on(py, probes.comment(py, "python")) == "# yes"
    assert on(py, probes.in_string(py, "python")) == ("'#no'\"\"\"doc # not a comment\n\"\"\""
                                                   'f"x"')
    tex = r"50\% off % real comment" + "\nLet $x^2$ and \\[ y \\] be \\(z\\)."
    assert on(tex, probes.comment(tex, "latex")) == "% real comment"
    assert on(tex, probes.in_math(tex, "latex")) == "$x^2$\\[ y \\]\\(z\\)"
    assert on(tex, probes.preprocessor(tex, "latex")) == ""  # no such thing in LaTeX


def test_each_language_is_detected_and_latex_environments_nest():
    assert probes.detect("#include <stdio.h>\nint main(void) {\n    return 0;\n}\n") == "c"
    assert probes.detect("import os\n\ndef f(self):\n    return self.x\n") == "python"
    assert probes.detect("\\begin{proof}\nLet $x$ be a point.\n\\end{proof}\n") == "latex"
    assert probes.detect("It was a bright cold day in April, and the clocks were "
                         "striking thirteen. Winston Smith hurried home.") == "prose"
    tex = r"\begin{a}x\begin{b}y\end{b}z\end{a}w"
    d = probes.environment_depth(tex, "latex")
    assert d[tex.index("x")] == 1 and d[tex.index("y")] == 2 and d[tex.index("z")] == 1
    assert d[tex.index("w")] == 0
    prose = "One two. Three four! Five"
    pos = probes.sentence_pos(prose, "prose")
    assert pos[prose.index("Three")] == 0 and pos[prose.index("four")] == 6
    assert pos[prose.index("Five")] == 0


def test_if_paren_covers_the_condition_with_nested_parens():
    text = "if (a && (b || c)) { f(x); } elif(y)"
    assert on(text, probes.if_paren(text)) == "(a && (b || c))"


def test_indent_and_line_position():
    text = "def f():\n    return 1\n\tx\n"
    ind = probes.indent(text)
    assert ind[text.index("def")] == 0 and ind[text.index("return")] == 4
    assert ind[text.index("x")] == 4
    pos = probes.line_pos(text)
    assert pos[text.index("return")] == 4 and pos[text.index("def")] == 0
    assert pos[text.index("\n")] == 8


def test_regex_probe_marks_matches():
    text = "see https://example.org/x now"
    f = probes.regex_probe(r"https?://\S+").feature(text)
    assert on(text, f) == "https://example.org/x"


def test_correlations_find_the_matching_column():
    rng = np.random.default_rng(0)
    feature = (rng.random(500) > 0.5).astype(float)
    acts = rng.normal(size=(500, 10))
    acts[:, 7] = -feature + 0.01 * rng.normal(size=500)
    acts[:, 3] = 1.0  # a flat cell has no correlation, not NaN
    r = probes.correlations(acts, feature)
    assert np.argmax(np.abs(r)) == 7 and r[7] < -0.99 and r[3] == 0


def test_bad_probe_names_and_regexes_are_clear_errors():
    with pytest.raises(CharrnnError, match="unknown --probe"):
        probes.get("sarcasm")
    with pytest.raises(CharrnnError, match="not a valid regular expression"):
        probes.regex_probe("(unclosed")


def test_a_pattern_that_backtracks_without_end_is_stopped_with_one_line(monkeypatch):
    """(a+)+$ on 33 a's and a b takes Python's re hours; the regex engine finishes it at once.
    (a|aa)+$ backtracks without end in both: it is stopped at the time limit."""
    import time

    monkeypatch.setattr(probes, "PATTERN_SECONDS", 0.5)
    text = "a" * 33 + "b"
    assert probes.regex_probe("(a+)+$").feature(text).sum() == 0
    began = time.monotonic()
    with pytest.raises(CharrnnError, match=r"did not finish within 0\.5 s on 34 characters"):
        probes.regex_probe("(a|aa)+$").feature(text)
    assert time.monotonic() - began < 5
    assert probes.regex_probe("(a|aa)+$").feature("aab").tolist() == [0, 0, 0]  # (it works)


def test_language_detection_takes_linear_time_on_blank_lines():
    """\\s* ran on over every blank line after each line start: 64,000 newlines took ~35 s."""
    import time

    for text in ("\n" * 200_000, ";" + "\n" * 200_000, "x:\n" + " \n" * 100_000):
        began = time.monotonic()
        assert probes.detect(text) == "prose"
        assert time.monotonic() - began < 2, repr(text[:5])
