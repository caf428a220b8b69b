"""Probes: per-character features computed from the text itself, and the cells that follow them.

A probe maps a text of N characters to N numbers (for example 1 inside double quotes, else 0).
Ranking a probe correlates it with every cell of every layer at once: one matrix product.
Features are computed with numpy and regular expressions, never a Python loop per character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import regex

from charrnn.config import LANGUAGES  # noqa: F401 - the languages the scanners below know
from charrnn.errors import CharrnnError
from charrnn.vocab import code_points


def _is(text: str, chars: str) -> np.ndarray:
    cps = code_points(text)
    return np.isin(cps, code_points(chars))


def quote(text: str, lang: str = "prose") -> np.ndarray:
    """1 from an opening double quote up to (not including) its closing one."""
    return (np.cumsum(_is(text, '"')) % 2).astype(np.float32)


def clipped_walk(steps: np.ndarray) -> np.ndarray:
    """A running sum that never goes below 0 (a stray closer does not make depth negative)."""
    total = np.cumsum(steps)
    return total - np.minimum(np.minimum.accumulate(total), 0)


def depth(text: str, lang: str = "c") -> np.ndarray:
    """Bracket and parenthesis depth; an opener counts as inside, its closer as outside."""
    return clipped_walk(_is(text, "([{").astype(np.int64) - _is(text, ")]}")).astype(np.float32)


def _spans(text: str, pattern, group: int | str = 0, timeout: float | None = None
           ) -> np.ndarray:
    """1 on every character inside a match (or inside the given group of a match); a `regex`
    pattern's matching stopped after `timeout` seconds (TimeoutError)."""
    marks = np.zeros(len(text) + 1, dtype=np.int64)
    found = (pattern.finditer(text) if timeout is None else
             pattern.finditer(text, concurrent=True, timeout=timeout))
    for m in found:
        start, end = m.span(group)
        if start >= 0 and end > start:
            marks[start] += 1
            marks[end] -= 1
    return (np.cumsum(marks)[:-1] > 0).astype(np.float32)


# Languages. Each has one left-to-right scanner, so a quote inside a comment or a comment
# marker inside a string is not mistaken for the other; a probe reads the groups it needs.

_SCANNERS = {
    "c": re.compile(  # a preprocessor line (with its continuations), comments, strings, chars
        r"(?P<pre>^[ \t]*\#(?:\\\n|[^\n])*)"
        r"|(?P<comment>/\*.*?(?:\*/|\Z)|//[^\n]*)"
        r"""|(?P<string>"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?)""",
        re.S | re.M),
    "python": re.compile(  # triple-quoted strings first, then one-line strings, then comments
        r"(?P<string>[rRbBuUfF]{0,2}(?:'{3}.*?(?:'{3}|\Z)|\"{3}.*?(?:\"{3}|\Z)"
        r"|'(?:\\.|[^'\\\n])*'?|\"(?:\\.|[^\"\\\n])*\"?))"
        r"|(?P<comment>\#[^\n]*)",
        re.S),
    "latex": re.compile(  # comments (not an escaped \%), then math in its four spellings
        r"(?P<comment>(?<!\\)%[^\n]*)"
        r"|(?P<math>\$\$.*?(?:\$\$|\Z)|(?<!\\)\$(?:\\.|[^$\\])*(?:\$|\Z)"
        r"|\\\(.*?(?:\\\)|\Z)|\\\[.*?(?:\\\]|\Z))",
        re.S),
    "prose": re.compile(r"""(?P<string>"[^"]*"?|“[^”]*”?)"""),
}
# how each language shows itself, per character of text (blanks within a line only: \s* would
# run on over every blank line that follows, for each of them, and take quadratic time)
_SIGNS = {
    "c": re.compile(r"^\#(?:include|define|ifn?def|endif)\b|;[ \t\r]*$|/\*|\b(?:int|void|"
                    r"struct|return|static|const|char)\b|^// \S+\.[ch]\b", re.M),
    "python": re.compile(r"^[ \t]*(?:def|class|import|from|elif|return)\b|:[ \t\r]*$|\bself\.|"
                         r"^# \S+\.py\b", re.M),
    "latex": re.compile(r"\\(?:begin|end|section|label|ref|cite|frac|mathcal)\b|\$|"
                        r"^% \S+\.tex\b", re.M),
}


def detect(text: str) -> str:
    """The language of a text: the one whose signs are most frequent; prose when none is."""
    counts = {lang: len(pattern.findall(text)) for lang, pattern in _SIGNS.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] * 400 >= len(text) else "prose"  # 1 sign in 400 characters


def _scan(text: str, lang: str, group: str) -> np.ndarray:
    pattern = _SCANNERS[lang]
    if group not in pattern.groupindex:
        return np.zeros(len(text), dtype=np.float32)
    return _spans(text, pattern, group)


def comment(text: str, lang: str = "c") -> np.ndarray:
    """1 inside a comment of the text's language: C /* */ and //, Python #, LaTeX %."""
    return _scan(text, lang, "comment")


def in_string(text: str, lang: str = "c") -> np.ndarray:
    """1 inside a string literal (C and Python, triple-quoted ones too) or a quotation."""
    return _scan(text, lang, "string")


def preprocessor(text: str, lang: str = "c") -> np.ndarray:
    """1 on a C preprocessor line (#include, #define, ...), continuations included."""
    return _scan(text, lang, "pre")


def in_math(text: str, lang: str = "latex") -> np.ndarray:
    """1 inside LaTeX math: $...$, $$...$$, \\(...\\), \\[...\\]."""
    return _scan(text, lang, "math")


def environment_depth(text: str, lang: str = "latex") -> np.ndarray:
    """How many LaTeX environments (\\begin ... \\end) are open."""
    steps = np.zeros(len(text) + 1, dtype=np.int64)
    for m in re.finditer(r"\\(begin|end)\{", text):
        steps[m.start() if m.group(1) == "begin" else m.end()] += 1 if m.group(1) == "begin" \
            else -1
    return clipped_walk(steps[:-1]).astype(np.float32)


def sentence_pos(text: str, lang: str = "prose") -> np.ndarray:
    """How many characters since the sentence began (after . ! ? and a space, or a blank
    line)."""
    starts = np.zeros(len(text), dtype=bool)
    starts[0] = True
    for m in re.finditer(r"[.!?][\"')\]]*\s+|\n\s*\n", text):
        if m.end() < len(text):
            starts[m.end()] = True
    begun = np.maximum.accumulate(np.where(starts, np.arange(len(text)), 0))
    return (np.arange(len(text)) - begun).astype(np.float32)


def if_paren(text: str, lang: str = "c") -> np.ndarray:
    """1 inside the parentheses right after `if`, nested ones included."""
    d = depth(text)
    out = np.zeros(len(text), dtype=np.float32)
    for m in re.finditer(r"\bif\s*\(", text):
        open_at = m.end() - 1
        level = d[open_at]  # depth of the '(' itself; its ')' is back at level - 1
        after = np.flatnonzero(d[open_at:] < level)
        close_at = open_at + (after[0] if len(after) else len(text) - open_at)
        out[open_at: close_at + 1] = 1.0
    return out


def _line_starts(text: str) -> tuple[np.ndarray, np.ndarray]:
    """For every character, the index of its line and where that line starts."""
    newline = _is(text, "\n")
    line = np.concatenate([[0], np.cumsum(newline)[:-1]])  # a newline belongs to its line
    starts = np.concatenate([[0], np.flatnonzero(newline) + 1])
    return line, starts


def line_pos(text: str, lang: str = "c") -> np.ndarray:
    """How far into its line a character is (0 for the first)."""
    line, starts = _line_starts(text)
    return (np.arange(len(text)) - starts[line]).astype(np.float32)


def indent(text: str, lang: str = "python") -> np.ndarray:
    """The indentation of the character's line, in columns (a tab counts 4)."""
    line, _ = _line_starts(text)
    widths = [len(m.group().expandtabs(4)) for m in re.finditer(r"^[ \t]*", text, re.M)]
    return np.asarray(widths, dtype=np.float32)[line]


@dataclass(frozen=True)
class Probe:
    name: str
    help: str
    feature: Callable[[str, str], np.ndarray]  # (text, language) -> one number a character


PROBES = {p.name: p for p in [
    Probe("quote", "inside double quotes", quote),
    Probe("comment", "inside a comment of the text's language (C /* */ and //, Python #, "
          "LaTeX %)", comment),
    Probe("string", "inside a string literal (C, Python) or a quotation (prose)", in_string),
    Probe("preprocessor", "on a C preprocessor line (#include, #define, ...)", preprocessor),
    Probe("math", "inside LaTeX math ($...$, $$...$$, \\(...\\), \\[...\\])", in_math),
    Probe("env-depth", "how many LaTeX environments are open", environment_depth),
    Probe("depth", "bracket and parenthesis depth", depth),
    Probe("if-paren", "inside the parentheses after `if`", if_paren),
    Probe("indent", "indentation depth of the line", indent),
    Probe("line-pos", "position in the line", line_pos),
    Probe("sentence-pos", "characters since the sentence began", sentence_pos),
]}


PATTERN_SECONDS = 2.0  # a user's pattern may take this long over a text, then it is stopped


def regex_probe(pattern: str) -> Probe:
    """A probe that is 1 inside the matches of a user's regular expression. Python's syntax,
    matched by the `regex` engine, which finishes some patterns that backtrack without end in
    Python's own ((a+)+$ on a line of a's) and stops the rest ((a|aa)+$) at a time limit with
    one line, and while it runs it holds no lock
    that the rest of the program (explore's screen) waits on."""
    try:
        compiled = regex.compile(pattern)
    except (regex.error, ValueError, OverflowError) as e:
        raise CharrnnError(f"--probe-regex {pattern!r} is not a valid regular expression: {e}") \
            from None

    def feature(text: str, lang: str | None = None) -> np.ndarray:
        try:
            return _spans(text, compiled, timeout=PATTERN_SECONDS)
        except TimeoutError:
            raise CharrnnError(f"--probe-regex {pattern!r} did not finish within "
                               f"{PATTERN_SECONDS:g} s on {len(text):,} characters (a pattern "
                               "that backtracks without end, like (a|aa)+$); simplify it") \
                from None
    return Probe(f"regex {pattern}", f"inside matches of {pattern}", feature)


def get(name: str) -> Probe:
    if name not in PROBES:
        raise CharrnnError(f"unknown --probe {name!r}; choose from {', '.join(PROBES)} "
                           "(see --list-probes), or use --probe-regex")
    return PROBES[name]


def correlations(activations: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson r of every column of activations (N, C) with feature (N,); 0 where either is flat."""
    a = activations - activations.mean(axis=0)
    f = feature - feature.mean()
    norm = np.sqrt((a * a).sum(axis=0)) * np.sqrt((f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f @ a) / norm
    return np.nan_to_num(r, nan=0.0, posinf=0.0, neginf=0.0)
