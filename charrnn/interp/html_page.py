"""The HTML export: one self-contained page (no network when opened) with the same views.

All text from the corpus or the model travels as JSON inside a non-executable script element,
with <, > and & escaped, and the page's script puts it into the document with textContent only,
so a corpus holding `<script>` shows it as text. Hovering a character shows its value and the
model's five likeliest next characters, as in Karpathy's blog figures.
"""

from __future__ import annotations

import html
import json

import numpy as np

from charrnn.interp.terminal import BLUE, RED, WHITE, View, glyph

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; } h2 { font-size: 1em; margin: 1.4em 0 0.4em; }
.text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 14px;
        line-height: 1.5; white-space: pre-wrap; word-break: break-all; }
.text span { cursor: default; }
.text span.mark { text-decoration: underline wavy #000; }
#panel { position: fixed; right: 1em; top: 1em; width: 22em; padding: 0.6em 0.8em;
         background: #fff; border: 1px solid #999; box-shadow: 0 2px 6px #0003;
         font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
         white-space: pre; }
.legend { font-size: 0.85em; color: #555; }
"""

_SCRIPT = """
const data = JSON.parse(document.getElementById("data").textContent);
const WHITE = data.palette.white, RED = data.palette.red, BLUE = data.palette.blue;
function mix(a, b, t) { return a.map((x, i) => Math.round(x + (b[i] - x) * t)); }
function colour(v, lo, hi) {
  if (v === null) return WHITE;
  if (lo < 0) {
    const t = Math.max(-1, Math.min(1, v / Math.max(-lo, hi)));
    return t < 0 ? mix(WHITE, RED, -t) : mix(WHITE, BLUE, t);
  }
  return mix(WHITE, BLUE, Math.max(0, Math.min(1, (v - lo) / (hi - lo))));
}
const panel = document.getElementById("panel");
function show(view, i) {
  const v = view.values[i];
  const lines = [
    "position " + i + "  " + JSON.stringify(data.glyphs[i]),
    view.title + ": " + (v === null ? "-" : v.toFixed(3)),
    "next character, likeliest first:",
  ];
  for (const [g, p] of data.top[i]) {
    lines.push("  " + JSON.stringify(g) + "  " + (100 * p).toFixed(1) + "%");
  }
  panel.textContent = lines.join("\\n");
}
for (const view of data.views) {
  const section = document.createElement("section");
  const h = document.createElement("h2");
  h.textContent = view.title;
  section.appendChild(h);
  const box = document.createElement("div");
  box.className = "text";
  data.glyphs.forEach((g, i) => {
    const span = document.createElement("span");
    span.textContent = g;
    const [r, gr, b] = colour(view.values[i], view.lo, view.hi);
    span.style.backgroundColor = "rgb(" + r + "," + gr + "," + b + ")";
    if (0.299 * r + 0.587 * gr + 0.114 * b < 140) span.style.color = "#fff";
    if (view.marks && view.marks[i]) span.className = "mark";
    span.dataset.index = i;
    span.addEventListener("mouseenter", () => show(view, i));
    box.appendChild(span);
    if (data.newline[i]) box.appendChild(document.createTextNode("\\n"));
  });
  section.appendChild(box);
  document.getElementById("views").appendChild(section);
}
"""


def _json_for_script(value) -> str:
    # inside <script>, "</script>" or "<!--" in the data would end or confuse the element
    text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(values: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def build(title: str, text: str, views: list[View], top_glyphs: list[list[str]],
          top_probs: np.ndarray, summary: list[str] = ()) -> str:
    """A self-contained page of `views` over `text`."""
    glyphs = [glyph(ch) for ch in text]
    data = {
        "glyphs": glyphs,
        "newline": [ch == "\n" for ch in text],
        "views": [{"title": v.title, "values": _clean(np.asarray(v.values)), "lo": v.lo,
                   "hi": v.hi, "marks": None if v.marks is None else [bool(m) for m in v.marks]}
                  for v in views],
        "top": [[[g, round(float(p), 4)] for g, p in zip(gs, ps)]
                for gs, ps in zip(top_glyphs, top_probs)],
        "palette": {"white": WHITE, "red": RED, "blue": BLUE},
    }
    lines = f"<pre>{html.escape(chr(10).join(summary))}</pre>" if summary else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{lines}"
        "<p class=\"legend\">Background: the value at each character (red -1, white 0, blue +1;"
        " gates white 0 to blue 1). Hover a character for its value and the model's five "
        "likeliest next characters.</p>"
        "<div id=\"panel\">hover a character</div><div id=\"views\"></div>"
        f"<script type=\"application/json\" id=\"data\">{_json_for_script(data)}</script>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
