"""Beam search against sampling: is a beam of 8 at least half as fast as 8 samples?

    python benchmarks/beam.py          # about a minute on a 2-core CPU, nothing else running

For a 2x512 and a 2x128 LSTM (weights as initialised: the speed does not depend on them), the
time to find the beam's continuation of 2,000 characters with a beam of 8, against the time
to draw 8 independent samples of 2,000 characters, one after another, each as `sample` draws
it. Both in this process, each timed three times in turn, the median kept. A beam of 8 does
the work of 8 samples (8 states stepped, 8 distributions) plus its choice of the 8 best of
8 x V extensions; it steps its 8 states as one batch. Writes benchmarks/results/beam.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_results  # noqa: E402

from charrnn import threads  # noqa: E402
from charrnn.beam import beam_search  # noqa: E402
from charrnn.config import ModelConfig, SampleConfig  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.sample import generate  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402

VOCAB = Vocab(tuple(sorted(set("\n !\"',-.:;?" +
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))))
LENGTH, WIDTH, REPEATS = 2000, 8, 3
TARGET = 0.5  # the beam's speed against the samples', at least


def one(layers: int, hidden: int) -> dict:
    torch.manual_seed(0)
    m = CharRNN(ModelConfig(vocab_size=len(VOCAB), layers=layers, hidden_size=hidden,
                            dropout=0.0)).eval()
    cfg = SampleConfig(length=LENGTH, temperature=0.8)

    def samples():
        for seed in range(WIDTH):
            for _ in generate(m, VOCAB, "ROMEO:", cfg, torch.Generator().manual_seed(seed)):
                pass

    def beam():
        for _ in beam_search(m, VOCAB, "ROMEO:", WIDTH, LENGTH):
            pass

    times = {"samples": [], "beam": []}
    for _ in range(REPEATS):  # in turn: a machine's drift falls on both alike
        for name, fn in (("samples", samples), ("beam", beam)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    s, b = statistics.median(times["samples"]), statistics.median(times["beam"])
    row = {"model": f"{layers}x{hidden} lstm", "length": LENGTH, "width": WIDTH,
           "samples_s": s, "beam_s": b, "speed_ratio": s / b, "times": times}
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "beam.json")
    args = parser.parse_args()
    threads.configure()
    rows = [one(2, 512), one(2, 128)]
    write_results(args.json, {"rows": rows, "target": TARGET,
                              "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
