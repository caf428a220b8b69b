"""charrnn benchmarks: every figure beside a baseline measured in the same run, on this machine.

    python benchmarks/bench.py            # every section below (an hour or more on 2 cores)
    python benchmarks/bench.py --only training sampling encoding memory   # about 5 minutes
    python benchmarks/bench.py --quick    # a smaller set

Prints a table and writes the same figures as JSON (benchmarks/results/bench.json, or --json), with
the machine, the date, the commit and the command; docs/performance.md renders its tables from it.

- training: charrnn's training step against a minimal reference loop written here (nn.Embedding
  + nn.LSTM + nn.Linear, AdamW, clipping), same configuration, same process, interleaved;
  and the achieved GFLOP/s against a matrix-multiply peak measured in the same run.
- sampling: batch 1, streaming 2,000 characters, against the plain per-character loop (from
  cold, as a script runs it; warmed by 500 characters; and the same loop over nn.LSTMCell /
  GRUCell / RNNCell modules), for lstm, gru and rnn; and whether the fast path writes the same
  text as the straightforward one.
  Each path runs in a fresh process, as a sampling script does: in a process that has already
  run large batches, nn.LSTM at batch 1 was seen to run up to 4x faster, so an in-process
  figure depends on what ran before it.
- inspect: one inspect-cells pass over 10,000 characters of a 3x512 LSTM, and every view.
- encoding: MB/s and peak resident memory encoding a generated UTF-8 text with a few hundred
  distinct characters (100 MB; 20 MB with --quick), in a fresh process.
- memory: peak resident memory training on a generated 1 GB corpus (full run only).
- quality: validation loss after a fixed wall-clock budget with default settings on
  ../shared/corpora/tinyshakespeare.txt (skipped when absent).
- budget: for budgets of 45 s, 2 min and 4 min (20 s and 45 s with --quick), on tiny Shakespeare
  and a 3M-character slice of python-stdlib (tiny Shakespeare alone with --quick), the
  automatic choice of size against the candidate sizes on either side of it, each trained with
  the same --time; two runs at a time, one core each (about 20 minutes; --quick under 5).
  --budget-cases runs some cases alone, --budget-seeds each run once per seed.
- ngram: the n-gram counts of `charrnn eval` (interpolated Kneser-Ney, up to 9 characters of
  context) over 10M characters of python-stdlib (2M with --quick): seconds and peak memory.
- samples: the share of a default one-minute training run on tiny Shakespeare spent writing the
  short sample shown (and kept in samples.txt) at each evaluation.
- torchrun: training speed of one process against `torchrun --nproc-per-node N` (N = the GPUs
  here, or 2 CPU processes of one thread each), for the same global batch and for N times it,
  for a small and a larger LSTM: what data parallelism gains on this machine.
- contention: charrnn beside other work: training chars/s of a 2x128 and a 2x512 LSTM beside
  one busy core and beside a second training, and sampling a 2x512 beside a busy core, each
  beside the quiet figure, for charrnn's thread policy and for torch's default threads; a
  tiny Shakespeare `--time 2m` beside a busy core against the quiet machine with --threads 1;
  and a calibration cache planted with a 100x-slow entry, corrected by one run.
- quickstart: the README's first command, `charrnn train python-stdlib --time 1m`, twice, each
  in an empty home folder: what it says and the validation loss it reaches; the README's sample
  of it; and docs/train.md's example of the choice (full run only; about 6 minutes).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grid import corpus_file, stdlib_slice  # noqa: E402 - the grid's own texts
from results import write_results  # noqa: E402

from charrnn import checkpoint  # noqa: E402
from charrnn.config import InspectConfig, ModelConfig, SampleConfig, TrainConfig  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.output import TextOut  # noqa: E402
from charrnn.sample import generate  # noqa: E402
from charrnn.training import prepare  # noqa: E402
from charrnn.vocab import Vocab  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
TARGETS = {"train_ratio": 0.97, "sample_512": 12.0, "sample_128": 2.5, "encode_mb_s": 50.0,
           "rss_1gb_mb": 1536.0, "quality_4m": 1.55}


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU, {torch.get_num_threads()} threads"


# ---------------------------------------------------------------------------------------------
# Matrix-multiply peak


def matmul_peak(device: torch.device, seconds: float = 1.5) -> float:
    """The best float32 matrix-multiply rate here, GFLOP/s. On a CPU both BLAS (torch.mm) and
    oneDNN (what nn.LSTM runs on) are tried: on some CPUs one is twice the other."""
    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    candidates = [lambda: a @ b]
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        from torch.utils import mkldnn as onednn

        linear = onednn.to_mkldnn(nn.Linear(n, n, bias=False))
        x = torch.randn(n, n).to_mkldnn()
        candidates.append(lambda: linear(x))
    best = 0.0
    with torch.no_grad():
        for fn in candidates:
            fn()
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / len(candidates):
                fn()
                reps += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


# ---------------------------------------------------------------------------------------------
# Training


def step_flops(layers: int, hidden: int, emb: int, vocab: int, chars: int, gates: int = 4):
    """Matrix-multiply FLOPs of one step: forward, and backward at twice the forward."""
    recurrent = sum(2 * gates * hidden * ((emb if k == 0 else hidden) + hidden)
                    for k in range(layers))
    return 3 * chars * (recurrent + 2 * hidden * vocab)


class Reference:
    """The plain training loop a person would write first."""

    def __init__(self, vocab: int, layers: int, hidden: int, emb: int, device):
        torch.manual_seed(0)
        self.emb = nn.Embedding(vocab, emb).to(device)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True).to(device)
        self.head = nn.Linear(hidden, vocab).to(device)
        self.params = [*self.emb.parameters(), *self.rnn.parameters(), *self.head.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=2e-3)
        self.h = None

    def step(self, x, y):
        out, h = self.rnn(self.emb(x), self.h)
        self.h = tuple(s.detach() for s in h)
        logits = self.head(out)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        return loss


def bench_training(corpus: Path, device, layers, hidden, seq, batch, blocks, steps, peak):
    cfg = TrainConfig(batch_size=batch, seq_len=seq, lr=2e-3, device=str(device),
                      max_steps=10**9, warmup_steps=0)
    with tempfile.TemporaryDirectory() as run:
        trainer = prepare.new(str(corpus), Path(run) / "run", cfg,
                              {"hidden_size": hidden, "layers": layers, "embedding_size": 64,
                               "dropout": 0.0},  # the reference loop has no dropout
                              reporter=_quiet())
        trainer.setup.lock.release()  # (this benchmark drives the step itself)
    streams = trainer.train_streams
    data = torch.from_numpy(np.asarray(streams.inputs, dtype=np.int64))  # (B, L)
    target = torch.from_numpy(np.asarray(streams.targets, dtype=np.int64))
    ref = Reference(len(trainer.vocab), layers, hidden, 64, device)
    window = [0]

    def ours():
        i = window[0] % streams.windows
        x, y = streams.tensors(i, device)
        _, trainer.hidden = trainer.runner.step(x, y, trainer.hidden, cfg.lr)
        window[0] += 1

    def reference():
        i = window[0] % streams.windows
        cols = slice(i * seq, (i + 1) * seq)
        ref.step(data[:, cols].to(device), target[:, cols].to(device))
        window[0] += 1

    def timed(fn, n):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n * batch * seq / (time.perf_counter() - start)

    timed(ours, 3), timed(reference, 3)  # warm up allocators and kernels
    rates = {"charrnn": [], "reference": []}
    for _ in range(blocks):  # interleaved, so drift in the machine hits both alike
        rates["reference"].append(timed(reference, steps))
        rates["charrnn"].append(timed(ours, steps))
    ours_rate = statistics.median(rates["charrnn"])
    ref_rate = statistics.median(rates["reference"])
    flops = step_flops(layers, hidden, 64, len(trainer.vocab), batch * seq) / (batch * seq)
    return {"config": f"{layers}x{hidden} lstm, seq {seq}, batch {batch}",
            "charrnn_chars_per_s": ours_rate, "reference_chars_per_s": ref_rate,
            "ratio": ours_rate / ref_rate, "gflops": ours_rate * flops / 1e9,
            "fraction_of_peak": ours_rate * flops / 1e9 / peak}


# ---------------------------------------------------------------------------------------------
# Sampling


def sampling_model(kind: str, layers: int, hidden: int) -> tuple[CharRNN, Vocab]:
    vocab = Vocab(tuple(sorted(set(TINYSHAKESPEARE.read_text()[:20000])))
                  if TINYSHAKESPEARE.exists() else tuple(chr(32 + i) for i in range(65)))
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(vocab), model=kind, layers=layers,
                               hidden_size=hidden)).eval(), vocab


def cell_stack(model: CharRNN):
    """The model's layers as nn.LSTMCell/GRUCell/RNNCell modules sharing its weights."""
    c = model.config
    kind = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[c.model]
    cells = []
    for k in range(c.layers):
        cell = kind(c.embedding_size if k == 0 else c.hidden_size, c.hidden_size)
        w_ih, w_hh, b_ih, b_hh = model.layer_weights(k)
        cell.load_state_dict({"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih,
                              "bias_hh": b_hh})
        cells.append(cell.eval())
    return cells


def plain_loop(model: CharRNN, vocab: Vocab, n: int, sink, cells=None) -> float:
    """chars/s of the loop a person writes: one call of the model (or, with `cells`, of each
    layer's cell module) per character, softmax, multinomial."""
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[vocab.chars.index("\n") if "\n" in vocab.chars else 0]])
    state = None
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(n):
            if cells is None:
                logits, state = model(x, state)
                logits = logits[0, -1]
            else:
                inp = model.embed(x[0])  # (1, E)
                state = state or [None] * len(cells)
                for k, cell in enumerate(cells):
                    state[k] = cell(inp, state[k])
                    inp = state[k][0] if isinstance(state[k], tuple) else state[k]
                logits = model.head(inp)[0]
            probs = torch.softmax(logits / 0.8, dim=-1)
            i = torch.multinomial(probs, 1, generator=g)
            sink.write(vocab.chars[int(i)])
            x = i.view(1, 1)
    return n / (time.perf_counter() - start)


class FusedStepper:
    """The straightforward sampling path, to time charrnn's against: one call of the fused
    model per character."""

    def __init__(self, model: CharRNN, state):
        self.model, self.state = model, state

    @torch.no_grad()
    def step(self, i: int) -> np.ndarray:
        logits, self.state = self.model(torch.tensor([[i]]), self.state)
        return logits[0, -1].float().numpy()


def sampling_worker(kind: str, layers: int, hidden: int, n: int, mode: str) -> dict:
    """Run in a fresh process, as a user's sampling script would be: chars/s of one path.
    plain: the per-character nn.LSTM loop from cold; warm: the same loop after 500 characters
    of it; cells: a loop over nn.LSTMCell modules, warmed the same way."""
    model, vocab = sampling_model(kind, layers, hidden)
    sink = TextOut(io.StringIO())
    if mode in ("plain", "warm", "cells"):
        cells = cell_stack(model) if mode == "cells" else None
        if mode != "plain":
            plain_loop(model, vocab, 500, sink, cells)
        return {"chars_per_s": plain_loop(model, vocab, n, sink, cells)}
    start = time.perf_counter()
    text = []
    for ch in generate(model, vocab, "\n", SampleConfig(length=n),
                       torch.Generator().manual_seed(1),
                       stepper=None if mode == "fast" else FusedStepper):
        sink.write(ch)
        text.append(ch)
    return {"chars_per_s": n / (time.perf_counter() - start), "text": "".join(text)}


def in_fresh_process(*args) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench; "
            f"print(json.dumps(bench.sampling_worker(*{args!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def bench_sampling(kind: str, layers: int, hidden: int, n: int, n_plain: int, n_check: int):
    plain = in_fresh_process(kind, layers, hidden, n_plain, "plain")["chars_per_s"]
    warm = in_fresh_process(kind, layers, hidden, n_plain, "warm")["chars_per_s"]
    cells = in_fresh_process(kind, layers, hidden, n_plain, "cells")["chars_per_s"]
    fast = in_fresh_process(kind, layers, hidden, n, "fast")
    slow = in_fresh_process(kind, layers, hidden, n_check, "straightforward")
    return {"config": f"{layers}x{hidden} {kind}", "charrnn_chars_per_s": fast["chars_per_s"],
            "plain_chars_per_s": plain, "ratio": fast["chars_per_s"] / plain,
            "warm_chars_per_s": warm, "ratio_warm": fast["chars_per_s"] / warm,
            "cells_chars_per_s": cells, "ratio_cells": fast["chars_per_s"] / cells,
            "straightforward_chars_per_s": slow["chars_per_s"],
            "same_text": fast["text"][:n_check] == slow["text"], "checked_chars": n_check}


# ---------------------------------------------------------------------------------------------
# Encoding and memory


def generated_text(path: Path, megabytes: int, seed: int = 0) -> None:
    """UTF-8 text of about `megabytes` MB over ~300 distinct characters, lines of 20-120."""
    rng = np.random.default_rng(seed)
    alphabet = np.array([*range(32, 127), *range(0xC0, 0x180), *range(0x391, 0x3CA),
                         *range(0x4E00, 0x4E30), 0x1F600, 0x1F389], dtype=np.uint32)
    weights = rng.random(len(alphabet)) ** 3
    weights /= weights.sum()
    written = 0
    with open(path, "wb") as f:
        while written < megabytes * 1_000_000:
            cps = rng.choice(alphabet, size=4_000_000, p=weights)
            cps[rng.integers(20, 120, size=len(cps)).cumsum() % len(cps)] = 10
            data = cps.astype("<u4").tobytes().decode("utf-32-le").encode("utf-8")
            data = data[: megabytes * 1_000_000 - written]
            data = data.decode("utf-8", "ignore").encode("utf-8")  # whole characters only
            f.write(data)
            written += len(data)


PEAK_RSS = ("import sys\n"
            "def peak_mb():\n"
            "    # VmHWM belongs to this program alone; ru_maxrss would also count the memory of\n"
            "    # the benchmark process that forked it\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM:'):\n"
            "            return int(line.split()[1]) / 1024\n")


def run_measured(code: str, env: dict) -> tuple[float, float, str]:
    """(seconds, peak resident MB, stderr) of `code` run in a fresh Python process."""
    program = PEAK_RSS + "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) + \
        "except SystemExit as e:\n    if e.code:\n        raise\n" \
        "print('peak_rss_mb', peak_mb(), file=sys.stderr)\n"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {proc.stderr[-2000:]}")
    peak = float(proc.stderr.rsplit("peak_rss_mb", 1)[1].split()[0])
    return seconds, peak, proc.stderr


def charrnn_main(*args: str) -> str:
    return f"sys.argv = ['charrnn', *{list(args)!r}]\nfrom charrnn.cli import main\nmain()"


def bench_encoding(folder: Path, megabytes: int) -> dict:
    path = folder / f"generated-{megabytes}mb.txt"
    generated_text(path, megabytes)
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(folder / "cache-encode")}
    code = (f"from charrnn.data import corpus\nc = corpus.load({str(path)!r})\n"
            "print(len(c.ids), len(c.vocab), file=sys.stderr)")
    seconds, rss, out = run_measured(code, env)
    chars, distinct = map(int, out.split()[:2])
    size = path.stat().st_size
    return {"megabytes": size / 1e6, "characters": chars, "distinct": distinct,
            "seconds": seconds, "mb_per_s": size / 1e6 / seconds, "peak_rss_mb": rss}


def bench_big_training(folder: Path) -> dict:
    path = folder / "generated-1000mb.txt"
    generated_text(path, 1000, seed=1)
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(folder / "cache-big")}
    seconds, rss, _ = run_measured(charrnn_main(
        "train", str(path), "--out", str(folder / "big"), "--max-steps", "40",
        "--eval-every", "20", "--device", "cpu", "--hidden-size", "384", "--dropout", "0.1"), env)
    path.unlink()
    return {"megabytes": 1000, "seconds": seconds, "peak_rss_mb": rss}


def bench_quality(folder: Path, seconds: int) -> dict:
    run = folder / f"quality-{seconds}s"
    env = {**os.environ, "CHARRNN_CACHE_DIR": str(folder / "cache-quality")}
    run_measured(charrnn_main("train", str(TINYSHAKESPEARE), "--out", str(run), "--time",
                              f"{seconds}s", "--device", "cpu"), env)
    config = checkpoint.read_config(run)
    last = json.loads((run / checkpoint.METRICS).read_text().splitlines()[-1])
    return {"seconds": seconds, "best_val_loss": config["best_val_loss"],
            "best_step": config["step"], "steps": last["step"]}


# ---------------------------------------------------------------------------------------------
# Budget: the automatic choice against a grid of sizes trained with the same time budget


@torch.no_grad()
def full_validation_loss(run: Path, corpus: Path) -> float:
    """The best model's loss on the whole last 10% of the corpus. A run validates on at most
    what its plan allows (fewer characters for short budgets), so runs are compared here."""
    from charrnn.data.corpus import split
    from charrnn.engine.streams import Streams

    model, vocab, _ = checkpoint.load(run)
    _, val = split(vocab.encode(corpus.read_text(encoding="utf-8")), 0.1)
    streams = Streams(val, 64, 64)
    hidden, total = model.init_state(64), 0.0
    for i in range(streams.windows):
        x, y = streams.tensors(i, torch.device("cpu"))
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    return total / (streams.windows * 64 * 64)


def budget_run(corpus: Path, seconds: float, hidden: int | None, folder: Path,
               env: dict, dropout: float | None = None, seed: int | None = None) -> dict:
    """One `charrnn train --time` run (sizes chosen, or --hidden-size and --dropout given; the
    default seed, or `seed`) in its own process."""
    run = folder / (f"budget-{corpus.stem}-{seconds:g}s-{hidden or 'auto'}"
                    f"{'' if dropout is None else f'-d{dropout:g}'}"
                    f"{'' if seed is None else f'-seed{seed}'}")
    args = [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(run),
            "--overwrite", "--time", f"{seconds:g}s", "--device", "cpu"]
    if hidden:
        args += ["--hidden-size", str(hidden)]
    if dropout is not None:
        args += ["--dropout", f"{dropout:g}"]
    if seed is not None:
        args += ["--seed", str(seed)]
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"budget run failed: {proc.stderr[-2000:]}")
    config = checkpoint.read_config(run)
    return {"corpus": corpus.stem, "seconds": seconds, "hidden_size": config["model"][
        "hidden_size"], "dropout": config["model"]["dropout"], "auto": hidden is None,
            "run_val_loss": config["best_val_loss"],
            "best_val_loss": full_validation_loss(run, corpus), "steps": config["plan"]["steps"],
            "wall_s": time.perf_counter() - start, "choice": config["choice"]["reason"]}


def averaged(runs: list[dict]) -> dict:
    """The runs of one size, one per seed, as one point: the mean of their losses."""
    point = dict(runs[0])
    if len(runs) > 1:
        point["seed_losses"] = [r["best_val_loss"] for r in runs]
        point["best_val_loss"] = sum(point["seed_losses"]) / len(runs)
    return point


def bench_budget(folder: Path, quick: bool, cases: list[str] | None = None,
                 seeds: list[int] | None = None) -> dict:
    """For each corpus and budget (or only `cases`, as "stdlib-slice:120"), the automatic choice,
    then the sizes on either side of it, each trained with the same --time; with `seeds`, every
    run once for each seed and each size scored by its mean (one run's loss moves by about 0.01
    with its seed alone). Two runs at a time, each on one core (OMP_NUM_THREADS=1), so the full
    set fits in about half an hour; every run, automatic or not, sees the same machine: one
    core, with a neighbour on the other."""
    from concurrent.futures import ThreadPoolExecutor

    from charrnn.budget.rule import HIDDEN_SIZES

    if cases:
        jobs = [(corpus_file(name, folder), float(s))
                for name, s in (case.split(":") for case in cases)]
    else:
        corpora = [TINYSHAKESPEARE] + ([] if quick else [stdlib_slice(folder)])
        jobs = [(c, s) for c in corpora for s in ([20, 45] if quick else [45, 120, 240])]
    seeds = seeds or [None]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "CHARRNN_CACHE_DIR": str(folder / "cache-budget")}
    with ThreadPoolExecutor(2) as pool:
        auto = list(pool.map(lambda j: budget_run(j[0], j[1], None, folder, env, seed=j[2]),
                             [(c, s, seed) for c, s in jobs for seed in seeds]))
        around = []
        for c, s in jobs:  # (one calibration for all: every seed makes the same choice)
            r = next(a for a in auto if (a["corpus"], a["seconds"]) == (c.stem, s))
            i = HIDDEN_SIZES.index(r["hidden_size"])
            around += [(c, s, HIDDEN_SIZES[k], None) for k in (i - 1, i + 1)
                       if 0 <= k < len(HIDDEN_SIZES)]
            # the choice itself, its dropout turned the other way
            around.append((c, s, r["hidden_size"], 0.1 if r["dropout"] == 0 else 0.0))
        grid_jobs = [(*a, seed) for a in around for seed in seeds]
        grid = list(pool.map(lambda j: budget_run(j[0], j[1], j[2], folder, env, j[3], j[4]),
                             grid_jobs))
    rows = []
    for c, s in jobs:
        points = [averaged([a for a in auto if (a["corpus"], a["seconds"]) == (c.stem, s)])]
        points += [averaged([g for g, job in zip(grid, grid_jobs) if job[:4] == a])
                   for a in around if a[:2] == (c, s)]
        best = min(points, key=lambda p: p["best_val_loss"])
        rows.append({"corpus": c.stem, "seconds": s, "auto": points[0], "grid": points[1:],
                     "best_grid_loss": best["best_val_loss"],
                     "gap": points[0]["best_val_loss"] - best["best_val_loss"],
                     "target_gap": 0.03 if s <= 45 else 0.02})
    for c in {row["corpus"] for row in rows}:
        losses = [row["auto"]["best_val_loss"] for row in rows if row["corpus"] == c]
        for row in rows:  # (None: one budget of this corpus, nothing to compare)
            if row["corpus"] == c:
                row["non_increasing"] = (all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
                                         if len(losses) > 1 else None)
    return {"rows": rows, "seeds": seeds if seeds != [None] else None}


def as_new_user(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`charrnn ARGS` in `cwd` for a user whose home folder is `home`, with nothing of charrnn's
    set in the environment: its cache and corpora where platformdirs puts them in that home."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CHARRNN_") and k not in ("XDG_CACHE_HOME", "XDG_DATA_HOME")}
    return subprocess.run([sys.executable, "-m", "charrnn", *args], env={**env, "HOME": str(home)},
                          cwd=cwd, capture_output=True, text=True, check=True)


def bench_quickstart(folder: Path, runs: int = 2) -> dict:
    """The README's first commands as a new user runs them, each time on a machine charrnn has
    not seen (an empty home folder: no corpus built, no calibration cached): `charrnn train
    python-stdlib --time 1m`, `runs` times, what it says on stderr and the validation loss it
    reaches; then `charrnn sample runs/python-stdlib --length 300 --seed 1` of the first run;
    and, in the first home, docs/train.md's example of the choice: `--time 3m` on the first
    300,000 characters of tiny Shakespeare (its start line)."""
    out: dict = {"runs": []}
    for n in range(runs):
        home, cwd = folder / f"home{n}", folder / f"user{n}"
        cwd.mkdir(parents=True)
        said = as_new_user(home, cwd, "train", "python-stdlib", "--time", "1m").stderr
        config = checkpoint.read_config(cwd / "runs" / "python-stdlib")
        out["runs"].append({"val_loss": config["best_val_loss"],
                            "model": "{layers}x{hidden_size} {model}".format(**config["model"]),
                            "stderr": said.replace(str(home), "~")})
        if n == 0:
            out["sample"] = as_new_user(home, cwd, "sample", "runs/python-stdlib", "--length",
                                        "300", "--seed", "1").stdout
            if TINYSHAKESPEARE.exists():
                part = cwd / "tinyshakespeare-300k.txt"
                part.write_text(TINYSHAKESPEARE.read_text(encoding="utf-8")[:300_000],
                                encoding="utf-8")
                said = as_new_user(home, cwd, "train", part.name, "--time", "3m").stderr
                out["choice"] = next(line for line in said.splitlines()
                                     if line.startswith("chose "))
    return out


def bench_ngram(folder: Path, megabytes: int) -> dict:
    """Counting the n-gram baselines of `charrnn eval` up to 9 characters of context over the
    first `megabytes` million characters of python-stdlib, in a fresh process."""
    from charrnn.data import corpus

    _, path = corpus.resolve("python-stdlib")
    chars = megabytes * 1_000_000
    code = (f"import numpy as np, time\nfrom charrnn.evaluation import ngram\n"
            f"text = open({str(path)!r}, encoding='utf-8').read()[:{chars}]\n"
            "lut = {c: i for i, c in enumerate(sorted(set(text)))}\n"
            "ids = np.array([lut[c] for c in text], dtype=np.int64)\n"
            "start = time.perf_counter()\nngram.count(ids, 9)\n"
            "print('count_s', time.perf_counter() - start, file=sys.stderr)\n")
    _, peak, err = run_measured(code, {**os.environ})
    seconds = float(err.split("count_s", 1)[1].split()[0])
    return {"characters": chars, "order": 9, "count_s": seconds, "peak_rss_mb": peak}


def bench_samples(folder: Path, corpus: Path, seconds: float) -> dict:
    """The share of a default training run spent writing the samples shown at each evaluation
    (--sample-every 1), measured inside the run."""
    os.environ["CHARRNN_CACHE_DIR"] = str(folder / "cache-samples")
    cfg = TrainConfig(time=seconds, device="cpu")
    trainer = prepare.new(str(corpus), folder / "samples-run", cfg, reporter=_quiet())
    spent, sample = [0.0], trainer.sample

    def timed_sample(*args, **kw):  # the run's own samples, timed from outside
        start = time.perf_counter()
        text = sample(*args, **kw)
        spent[0] += time.perf_counter() - start
        return text

    trainer.sample = timed_sample
    outcome = trainer.run_loop()
    return {"seconds": seconds, "evaluations": trainer.evaluations,
            "sample_seconds": spent[0], "elapsed": trainer.elapsed,
            "share": spent[0] / trainer.elapsed, "steps": outcome.step,
            "model": "{layers}x{hidden_size} {model}".format(**trainer.model.config.to_dict())}


def torchrun_speed(folder: Path, corpus: Path, name: str, nproc: int, batch: int,
                   hidden: int, steps: int, device: str) -> float:
    """chars/s of `charrnn train` (under torchrun when nproc > 1) over `steps` steps."""
    run = folder / f"ddp-{name}-{hidden}"
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                 "--master-addr", "127.0.0.1", "--master-port", str(29400 + nproc)]
                if nproc > 1 else [sys.executable])
    subprocess.run([*launcher, "-m", "charrnn", "train", str(corpus), "--out", str(run),
                    "--layers", "2", "--hidden-size", str(hidden), "--dropout", "0",
                    "--batch-size", str(batch), "--seq-len", "100", "--max-steps", str(steps),
                    "--eval-every", str(steps), "--sample-every", "0", "--device", device],
                   check=True, capture_output=True)
    record = json.loads((run / checkpoint.METRICS).read_text().splitlines()[-1])
    return record["step"] * batch * 100 / record["elapsed"]


def bench_torchrun(folder: Path, corpus: Path, quick: bool) -> dict:
    gpus = torch.cuda.device_count()
    nproc, device = (gpus, "cuda") if gpus > 1 else (2, "cpu")
    rows = []
    for hidden, batch, steps in ((128, 32, 80), (512, 32, 16)):
        steps = steps // 2 if quick else steps
        one = torchrun_speed(folder, corpus, "one", 1, batch, hidden, steps, device)
        same = torchrun_speed(folder, corpus, "same", nproc, batch, hidden, steps, device)
        more = torchrun_speed(folder, corpus, "more", nproc, batch * nproc, hidden, steps,
                              device)
        rows.append({"model": f"2x{hidden} lstm", "batch": batch, "one_chars_per_s": one,
                     "same_batch_chars_per_s": same, "n_times_batch_chars_per_s": more})
    return {"nproc": nproc, "device": device, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Contention: charrnn beside other work on the machine


BUSY_LOOP = "while True: pass"  # one core kept busy by a pure-Python loop


@contextmanager
def busy_core():
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    time.sleep(0.5)
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def contention_train(corpus: str, run: str, hidden: int, seconds: float) -> dict:
    """Run in a fresh process: train a 2xH LSTM at charrnn's default batch for `seconds` with
    the threads the environment says (CHARRNN_THREADS, or charrnn's own policy); the speed of
    its steps, and the threads it ended on."""
    cfg = TrainConfig(batch_size=32, seq_len=64, lr=4e-3, device="cpu", max_steps=10**9,
                      eval_every=10**9, sample_every=0)
    trainer = prepare.new(corpus, Path(run), cfg, {"layers": 2, "hidden_size": hidden,
                                                   "embedding_size": 64, "dropout": 0.0},
                          reporter=_quiet(), overwrite=True)

    def stop(t):
        if t.elapsed >= seconds:
            t.interrupt()
    trainer.run_loop(on_step=stop)
    timing = trainer.pacer.timing
    return {"chars_per_s": timing.chars / timing.seconds, "threads": trainer.governor.threads,
            "moves": len(trainer.governor.moves)}


def _fresh(fn: str, *args, env: dict | None = None) -> subprocess.Popen:
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench; "
            f"print(json.dumps(bench.{fn}(*{args!r})))")
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed: {err[-2000:]}")
    return json.loads(out.splitlines()[-1])


def sample_speed(run: Path, env: dict, n: int = 6000, reps: int = 3) -> float:
    """chars/s of `charrnn sample` itself: the difference of a long and a one-character sample,
    so that start-up and loading cancel out, the median of `reps`."""
    rates = []
    for _ in range(reps):
        times = []
        for length in (1, n):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "charrnn", "sample", str(run), "--length",
                            str(length), "--seed", "1"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, **env}, cwd=ROOT)
            times.append(time.perf_counter() - start)
        rates.append((n - 1) / max(times[1] - times[0], 1e-9))
    return statistics.median(rates)


def bench_contention(folder: Path, corpus: Path, quick: bool) -> dict:
    """Training and sampling speed beside one busy core and beside a second training, each
    beside the quiet figure measured in the same run; charrnn's thread policy ("auto") against
    torch's default threads with nothing to follow the load ("fixed", what charrnn did before
    it had a policy). Then a tiny Shakespeare time budget beside a busy core against the same
    command on the quiet machine with --threads 1, and a calibration cache planted with a
    100x-slow entry."""
    fixed = {"CHARRNN_THREADS": str(torch.get_num_threads())}
    auto = {"CHARRNN_THREADS": "auto"}
    seconds = 6 if quick else 10
    out = {"training": [], "sampling": {}, "budget": None, "cache": None}
    for hidden in ((128,) if quick else (128, 512)):
        row = {"model": f"2x{hidden} lstm"}
        for name, env in (("fixed", fixed), ("auto", auto)):
            args = (str(corpus), str(folder / f"c-{name}-{hidden}"), hidden, seconds)
            row[f"quiet_{name}"] = _result(_fresh("contention_train", *args, env=env))
            with busy_core():
                row[f"busy_{name}"] = _result(_fresh("contention_train", *args, env=env))
            pair = [_fresh("contention_train", str(corpus), f"{args[1]}-{k}", hidden, seconds,
                           env=env) for k in (0, 1)]
            row[f"pair_{name}"] = [_result(p) for p in pair]
        out["training"].append(row)

    run = folder / "sample-512"
    trainer = prepare.new(str(corpus), run, TrainConfig(max_steps=1, device="cpu",
                                                        sample_every=0),
                          {"layers": 2, "hidden_size": 512, "dropout": 0.0},
                          reporter=_quiet())
    trainer.run_loop()
    for name, env in (("fixed", fixed), ("auto", auto)):
        out["sampling"][f"quiet_{name}"] = sample_speed(run, env)
        with busy_core():
            out["sampling"][f"busy_{name}"] = sample_speed(run, env)
    if TINYSHAKESPEARE.exists() and not quick:
        out["budget"] = bench_contention_budget(folder)
        out["cache"] = bench_planted_cache(folder)
    return out


def budget_command(folder: Path, name: str, seconds: float, env: dict,
                   *extra: str) -> dict:
    run = folder / name
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "charrnn", "train", str(TINYSHAKESPEARE),
                           "--out", str(run), "--overwrite", "--time", f"{seconds:g}s",
                           "--device", "cpu", *extra], env={**os.environ, **env},
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"budget run failed: {proc.stderr[-2000:]}")
    config = checkpoint.read_config(run)
    return {"wall_s": wall, "model": "{layers}x{hidden_size}".format(**config["model"]),
            "dropout": config["model"]["dropout"],
            "val_loss": full_validation_loss(run, TINYSHAKESPEARE),
            "replanned": bool((config.get("plan") or {}).get("first_steps")),
            "speed": (config.get("speed") or {}).get("train"),
            "lines": [line for line in proc.stderr.splitlines()
                      if not line.startswith(("step ", "  ", "sample at"))]}


def bench_contention_budget(folder: Path, seconds: float = 120) -> dict:
    """`--time 2m`, nothing else given, beside one busy core, against the same command with
    --threads 1 on the quiet machine (each with a cache of its own)."""
    quiet = budget_command(folder, "budget-quiet-1", seconds,
                           {"CHARRNN_CACHE_DIR": str(folder / "cache-b1")}, "--threads", "1")
    with busy_core():
        busy = budget_command(folder, "budget-busy", seconds,
                              {"CHARRNN_CACHE_DIR": str(folder / "cache-b2")})
    return {"seconds": seconds, "quiet_threads_1": quiet, "busy_auto": busy}


def bench_planted_cache(folder: Path, seconds: float = 45) -> dict:
    """A fresh calibration's choice for `--time 45s`; the same cache with that choice's entry
    planted 100x slow; one quiet run on it; then the choice of the run after."""
    cache = folder / "cache-planted"
    env = {"CHARRNN_CACHE_DIR": str(cache)}
    fresh = budget_command(folder, "planted-fresh", seconds, env)
    path = cache / "calibration.json"
    data = json.loads(path.read_text())
    hidden = int(fresh["model"].split("x")[1])
    key = next(k for k in data["speeds"] if f" 2x{hidden} " in k and "dropout" not in k)
    data["speeds"][key] = [{**t, "train": t["train"] / 100, "eval": t["eval"] / 100}
                           for t in data["speeds"][key]]
    path.write_text(json.dumps(data))
    poisoned = budget_command(folder, "planted-poisoned", seconds, env)
    after = budget_command(folder, "planted-after", seconds, env)
    return {"seconds": seconds, "fresh": fresh, "poisoned": poisoned, "after": after,
            "corrected": after["model"] == fresh["model"]}


def bench_inspect(corpus: Path, chars: int = 10_000) -> dict:
    """One inspect-cells pass over 10,000 characters of a 3x512 LSTM, and every view of it."""
    from charrnn.interp import inspection, probes, views

    text = corpus.read_text(encoding="utf-8")[:chars]
    vocab = Vocab(tuple(sorted(set(text))))
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(vocab), layers=3, hidden_size=512)).eval()
    start = time.perf_counter()
    ins = inspection.inspect(model, vocab, text)
    traced = time.perf_counter()
    built = views.build(ins, InspectConfig(probes=list(probes.PROBES), gates=True,
                                             surprisal=True))
    views.html("benchmark", built, ins)
    done = time.perf_counter()
    return {"characters": len(text), "model": "3x512 lstm", "trace_s": traced - start,
            "views_s": done - traced}


def _quiet():
    from rich.console import Console

    from charrnn.training.progress import Reporter
    return Reporter(Console(stderr=True, quiet=True))


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller set, under two minutes")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "bench.json", help="where to write the figures")
    parser.add_argument("--only", nargs="*", default=None,
                        help="sections: training sampling inspect encoding memory quality "
                             "budget quickstart samples ngram torchrun contention")
    parser.add_argument("--budget-cases", nargs="*", default=None, metavar="CORPUS:SECONDS",
                        help="the budget section's cases alone, as stdlib-slice:120 or "
                             "tinyshakespeare:45 [default: both corpora at 45, 120, 240]")
    parser.add_argument("--budget-seeds", nargs="*", type=int, default=None,
                        help="the budget section's runs once for each of these seeds, each "
                             "size scored by its mean [default: one run, the default seed]")
    parser.add_argument("--quality-minutes", nargs="*", type=float, default=None,
                        help="wall-clock budgets for the quality section [default: 1 4; 0.5 "
                             "with --quick]")
    args = parser.parse_args()
    quick = args.quick
    sections = set(args.only or ["training", "sampling", "inspect", "encoding", "memory",
                                 "quality", "budget", "quickstart", "samples", "ngram",
                                 "torchrun", "contention"])
    if quick:
        sections -= {"memory", "quickstart"}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"device": device_name(), "torch": torch.__version__, "quick": quick,
               "when": time.strftime("%Y-%m-%d %H:%M")}
    print(f"charrnn benchmarks on {results['device']}, torch {torch.__version__}"
          f"{' (quick)' if quick else ''}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = TINYSHAKESPEARE
        if not corpus.exists():
            corpus = folder / "generated.txt"
            generated_text(corpus, 2)
        if "training" in sections:
            peak = matmul_peak(device)
            results["matmul_peak_gflops"] = peak
            print(f"matrix-multiply peak: {peak:,.1f} GFLOP/s", flush=True)
            results["training"] = []
            for layers, hidden, seq, batch, steps in ((2, 128, 50, 50, 20), (2, 512, 100, 50, 4)):
                r = bench_training(corpus, device, layers, hidden, seq, batch,
                                   blocks=3 if quick else 7, steps=steps, peak=peak)
                results["training"].append(r)
                print(f"train {r['config']}: charrnn {r['charrnn_chars_per_s']:,.0f} chars/s, "
                      f"reference {r['reference_chars_per_s']:,.0f}: {r['ratio']:.3f}x "
                      f"(target >= {TARGETS['train_ratio']}); {r['gflops']:.1f} GFLOP/s, "
                      f"{r['fraction_of_peak']:.0%} of peak", flush=True)
        if "sampling" in sections:
            results["sampling"] = []
            for kind in ("lstm", "gru", "rnn"):
                for layers, hidden in ((2, 128), (2, 512)):
                    n_plain = 2000 if hidden == 128 or not quick else 300
                    n_check = 2000 if hidden == 128 or not quick else 300
                    r = bench_sampling(kind, layers, hidden, 2000, n_plain, n_check)
                    results["sampling"].append(r)
                    target = TARGETS["sample_512" if hidden == 512 else "sample_128"]
                    print(f"sample {r['config']}: charrnn {r['charrnn_chars_per_s']:,.0f} "
                          f"chars/s, plain loop {r['plain_chars_per_s']:,.0f}: "
                          f"{r['ratio']:.1f}x (target >= {target}); warmed loop "
                          f"{r['warm_chars_per_s']:,.0f}: {r['ratio_warm']:.1f}x; "
                          f"{kind.upper()}Cell loop {r['cells_chars_per_s']:,.0f}: "
                          f"{r['ratio_cells']:.1f}x; the straightforward "
                          f"path {r['straightforward_chars_per_s']:,.0f}; same text as it "
                          f"over {r['checked_chars']} chars: "
                          f"{r['same_text']}", flush=True)
        if "inspect" in sections:
            r = bench_inspect(corpus)
            results["inspect"] = r
            print(f"inspect {r['characters']:,} characters, {r['model']}: one pass "
                  f"{r['trace_s']:.1f} s, then every probe, gates, surprisal and the HTML page "
                  f"{r['views_s']:.1f} s", flush=True)
        if "encoding" in sections:
            r = bench_encoding(folder, 20 if quick else 100)
            results["encoding"] = r
            print(f"encode {r['megabytes']:.0f} MB ({r['distinct']} distinct characters): "
                  f"{r['mb_per_s']:.0f} MB/s (target >= {TARGETS['encode_mb_s']}), peak "
                  f"{r['peak_rss_mb']:.0f} MB resident", flush=True)
        if "memory" in sections:
            r = bench_big_training(folder)
            results["big_corpus"] = r
            print(f"train on a 1 GB corpus (encode + 40 steps): peak {r['peak_rss_mb']:.0f} MB "
                  f"resident (target < {TARGETS['rss_1gb_mb']:.0f}), {r['seconds']:.0f} s",
                  flush=True)
        if "quality" in sections and TINYSHAKESPEARE.exists():
            results["quality"] = []
            minutes = args.quality_minutes or ([0.5] if quick else [1, 4])
            for seconds in (int(m * 60) for m in minutes):
                r = bench_quality(folder, seconds)
                results["quality"].append(r)
                print(f"quality: tinyshakespeare, defaults, {seconds} s: best validation loss "
                      f"{r['best_val_loss']:.4f} nats/char (at step {r['best_step']} of "
                      f"{r['steps']})", flush=True)
        if "budget" in sections and TINYSHAKESPEARE.exists():
            results["budget"] = bench_budget(folder, quick, args.budget_cases,
                                             args.budget_seeds)
            for row in results["budget"]["rows"]:
                a = row["auto"]
                others = ", ".join(f"2x{g['hidden_size']} (dropout {g['dropout']:g}) "
                                   f"{g['best_val_loss']:.4f}" for g in row["grid"])
                print(f"budget {row['corpus']} {row['seconds']} s: auto 2x{a['hidden_size']} "
                      f"(dropout {a['dropout']:g}) {a['best_val_loss']:.4f}; {others}; gap "
                      f"{row['gap']:+.4f} (target <= {row['target_gap']}); non-increasing "
                      f"over budgets: {row['non_increasing']}", flush=True)
        if "ngram" in sections:
            r = bench_ngram(folder, 2 if quick else 10)
            results["ngram"] = r
            print(f"n-gram counts up to 9 characters of context over {r['characters']:,} "
                  f"characters of python-stdlib: {r['count_s']:.1f} s (target < 60 s), peak "
                  f"{r['peak_rss_mb']:,.0f} MB resident", flush=True)
        if "samples" in sections:
            r = bench_samples(folder, corpus, 30 if quick else 60)
            results["samples"] = r
            print(f"samples while training: {r['evaluations']} samples of 200 characters took "
                  f"{r['sample_seconds']:.2f} s of a {r['elapsed']:.0f} s run ({r['model']}): "
                  f"{r['share']:.2%} (target < 2%)", flush=True)
        if "torchrun" in sections:
            r = bench_torchrun(folder, corpus, quick)
            results["torchrun"] = r
            for row in r["rows"]:
                print(f"torchrun, {row['model']}, batch {row['batch']} x 100 on {r['device']}: "
                      f"one process {row['one_chars_per_s']:,.0f} chars/s; {r['nproc']} "
                      f"processes, the same batch {row['same_batch_chars_per_s']:,.0f} "
                      f"({row['same_batch_chars_per_s'] / row['one_chars_per_s']:.2f}x); "
                      f"{r['nproc']} times the batch {row['n_times_batch_chars_per_s']:,.0f} "
                      f"({row['n_times_batch_chars_per_s'] / row['one_chars_per_s']:.2f}x)",
                      flush=True)
        if "contention" in sections:
            r = bench_contention(folder, corpus, quick)
            results["contention"] = r
            for row in r["training"]:
                for name in ("fixed", "auto"):
                    q = row[f"quiet_{name}"]["chars_per_s"]
                    b = row[f"busy_{name}"]["chars_per_s"]
                    pa, pb = (x["chars_per_s"] for x in row[f"pair_{name}"])
                    print(f"contention, train {row['model']}, threads {name}: quiet {q:,.0f} "
                          f"chars/s; beside a busy core {b:,.0f} ({b / q:.2f}x, target >= "
                          f"0.4); two trainings at once {pa:,.0f} and {pb:,.0f} ({pa / q:.2f}x "
                          f"and {pb / q:.2f}x)", flush=True)
                ratio = row["quiet_auto"]["chars_per_s"] / row["quiet_fixed"]["chars_per_s"]
                print(f"contention, train {row['model']}: quiet, auto against fixed: "
                      f"{ratio:.3f}x (target >= 0.97)", flush=True)
            sm = r["sampling"]
            for name in ("fixed", "auto"):
                q, b = sm[f"quiet_{name}"], sm[f"busy_{name}"]
                print(f"contention, sample 2x512 lstm, threads {name}: quiet {q:,.0f} chars/s; "
                      f"beside a busy core {b:,.0f} ({b / q:.2f}x, target >= 0.4)", flush=True)
            if r["budget"]:
                b = r["budget"]
                q, busy = b["quiet_threads_1"], b["busy_auto"]
                print(f"contention, --time {b['seconds']:g}s on tiny Shakespeare: quiet with "
                      f"--threads 1 {q['model']} {q['val_loss']:.4f} in {q['wall_s']:.0f} s; "
                      f"beside a busy core {busy['model']} {busy['val_loss']:.4f} in "
                      f"{busy['wall_s']:.0f} s (gap {busy['val_loss'] - q['val_loss']:+.4f}, "
                      "target <= 0.03)", flush=True)
            if r["cache"]:
                c = r["cache"]
                print(f"contention, a 100x-slow cache entry: fresh calibration chose "
                      f"{c['fresh']['model']}; the run on the planted cache "
                      f"{c['poisoned']['model']}"
                      f" ({c['poisoned']['val_loss']:.4f}); the run after it "
                      f"{c['after']['model']}: corrected {c['corrected']}", flush=True)
        if "quickstart" in sections:
            results["quickstart"] = bench_quickstart(folder)
            for r in results["quickstart"]["runs"]:
                print(f"quick start: charrnn train python-stdlib --time 1m: {r['model']}, "
                      f"validation loss {r['val_loss']:.4f} nats/char", flush=True)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
