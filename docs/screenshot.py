"""Draw docs/inspect-cells.svg, the picture in the README: what `charrnn inspect-cells` prints
in a colour terminal, recorded as it is printed (Rich turns the terminal's text and colours
into SVG), not drawn by hand.

    python docs/screenshot.py                 # trains a one-minute model of Python first
    python docs/screenshot.py --run RUN       # or paints a run you have

The view: the cell of the model that best follows the `string` probe (inside string literals
and comments' quotes), painted over a stretch of Python from the run's validation text.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "inspect-cells.svg"
WIDTH = 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a run to paint [default: train one for 1 minute]")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": str(WIDTH), "NO_COLOR": ""}
    env.pop("NO_COLOR")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "python"
            subprocess.run([sys.executable, "-m", "charrnn", "train", "python-stdlib", "--time",
                            "1m", "--out", str(run), "--seed", "1"], check=True, env=env)
        shown = subprocess.run(
            [sys.executable, "-m", "charrnn", "inspect-cells", str(run), "--probe", "string",
             "--top", "3", "--length", "600", "--color", "always"],
            check=True, env=env, capture_output=True, text=True).stdout
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=WIDTH, force_terminal=True, color_system="truecolor",
                      file=open(os.devnull, "w"))
    console.print(Text.from_ansi(shown), soft_wrap=True)
    console.save_svg(str(args.out), title="charrnn inspect-cells RUN --probe string")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
