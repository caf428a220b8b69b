"""Every figure in the docs comes from a results file: each marked table is exactly what
benchmarks/render.py renders from the file it names, and names a file that is committed."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render_module():
    spec = importlib.util.spec_from_file_location("render", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_marked_table_is_what_its_results_file_renders():
    render = render_module()
    stale, marked = [], 0
    for page in render.pages():
        text = page.read_text(encoding="utf-8")
        found = render.MARKED.findall(text)
        marked += len(found)
        for _, name, table, _, _ in found:
            assert (render.RESULTS / name).is_file(), f"{page.name} names {name}, not committed"
            assert table in render.TABLES, f"{page.name} names a table {table} that is not one"
        if render.render(text) != text:
            stale.append(page.name)
    assert marked >= 4
    assert stale == [], "run `python benchmarks/render.py` (or the benchmark behind it)"


def test_a_changed_figure_is_caught(tmp_path):
    render = render_module()
    page = next(p for p in render.pages() if render.MARKED.search(p.read_text()))
    text = page.read_text(encoding="utf-8")
    m = render.MARKED.search(text)
    body = m.group(4)
    digit = next(i for i, ch in enumerate(body) if ch.isdigit())
    changed = body[:digit] + str((int(body[digit]) + 1) % 10) + body[digit + 1:]
    tampered = text[:m.start(4)] + changed + text[m.end(4):]
    assert render.render(tampered) != tampered
