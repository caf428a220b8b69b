"""How fast `charrnn explore` answers, on a 100,000-character text through a 2x512 LSTM: a
repaint after moving to another cell, layer or state, a probe's ranking of every cell, and a
selection's ranking of every cell (with its matches).

    python benchmarks/explore.py [--chars 100000] [--hidden 512]

Writes benchmarks/results/explore.json (machine, date, commit and command inside); the table in
docs/inspect.md is rendered from it (benchmarks/render.py).

The model is untrained (its weights do not change the cost) and the text generated here (code
with comments, strings and brackets). Each figure is the median of its repeats; the repaint is
timed two ways: the explorer's rows drawn for a full screen, and a key pressed through Textual's
test harness until the screen is redrawn, less what the harness takes for a key bound to
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from results import write_results  # noqa: E402

from charrnn.config import ModelConfig  # noqa: E402
from charrnn.interp import inspection  # noqa: E402
from charrnn.interp.explore_app import ExploreApp  # noqa: E402
from charrnn.interp.explorer import Explorer  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402

SIZE = (160, 50)  # the terminal: columns, lines


def generated_code(chars: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = ["count", "value", "index", "buffer", "result", "node", "item", "size", "next"]
    out, n = [], 0
    while n < chars:
        a, b = rng.choice(words, 2)
        line = rng.choice([
            f"    {a} = {b}({a}, {rng.integers(100)})  # update the {a}\n",
            f'    if ({a} > {b}) {{ print("{a} is larger"); }}\n',
            f"def {a}_{b}({a}, {b}=[{rng.integers(9)}, {rng.integers(9)}]):\n",
        ])
        out.append(line)
        n += len(line)
    return "".join(out)[:chars]


def timed(f, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "explore.json")
    args = ap.parse_args()
    text = generated_code(args.chars)
    vocab = Vocab(sorted(set(text)))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), model="lstm", layers=2,
                                hidden_size=args.hidden, embedding_size=64, dropout=0.0)).eval()
    start = time.perf_counter()
    ins = inspection.inspect(model, vocab, text)
    pass_s = time.perf_counter() - start
    print(f"the pass: {len(text):,} characters through a 2x{args.hidden} LSTM, every state kept, "
          f"in {pass_s:.1f} s, once")
    x = Explorer(ins, [])
    app = ExploreApp(x, "run", colour=True, html=lambda e: "")
    figures = {}

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            pane = app.pane
            x.cursor = len(text) // 2  # the middle of the text on screen
            app.changed()
            await pilot.pause()

            def repaint(move):
                move()
                for y in range(pane.size.height):
                    pane.render_line(y)

            figures["cell: rows drawn"] = timed(lambda: repaint(lambda: x.move_cell(1)), 30)
            figures["layer: rows drawn"] = timed(lambda: repaint(lambda: x.move_layer(1)), 30)
            figures["state: rows drawn"] = timed(lambda: repaint(lambda: x.move_state(1)), 30)
            async def keyed(key):
                times = []
                for _ in range(20):
                    began = time.perf_counter()
                    await pilot.press(key)
                    await pilot.pause()
                    times.append(time.perf_counter() - began)
                return statistics.median(times)

            harness = await keyed("z")  # a key bound to nothing: the test harness's own cost
            figures["cell: key to screen, less the harness's own"] = await keyed("n") - harness
            figures["(the harness's own: a key bound to nothing)"] = harness
            figures["probe: every cell ranked"] = timed(lambda: x.set_probe("comment"), 5)
            x.clear_probe()
            at = len(text) // 2
            began = time.perf_counter()
            x.select(at, at + 200)
            figures["selection, first of a state (sums kept)"] = time.perf_counter() - began
            figures["selection: every cell ranked, matches found"] = timed(
                lambda: x.select(at, at + 200), 10)

    asyncio.run(drive())
    for what, seconds in figures.items():
        print(f"{what:<48} {seconds * 1000:8.1f} ms")
    write_results(args.json, {"characters": len(text), "model": f"2x{args.hidden} lstm",
                              "terminal": list(SIZE), "pass_s": pass_s, "seconds": figures})


if __name__ == "__main__":
    main()
