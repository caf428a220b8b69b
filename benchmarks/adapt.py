"""The model that learns from the text in front of it: dynamic evaluation and the count models,
beside what a user could have without a network, measured in one run on this machine.

    python benchmarks/adapt.py              # about 15 minutes on a 2-core CPU
    python benchmarks/adapt.py --tune       # and the grid that chose the settings (+15 minutes)

Writes benchmarks/results/adapt.json (machine, date, commit and command inside); the tables in
docs/performance.md are rendered from it (benchmarks/render.py).

- Two runs trained as a user trains them, `charrnn train FILE --time 4m` with nothing else
  given: the source of this Python's standard library without the modules held out by name
  (HELD_OUT), and tiny Shakespeare (../shared/corpora, skipped when absent).
- `charrnn eval --json`: every row on the held-out modules, and on tiny Shakespeare's
  validation text; the targets: the best charrnn row against the network as trained, the best
  n-gram and bz2.
- The gate against one fixed weight for each mixture, on the same texts, and the adapting
  mixture with the match model and the records against it without them.
- Parallel streams against one sequential reading of the held-out modules (the loss), and the
  speed of adapting a 2x128 LSTM: streams on every core, and one stream on one thread.
- Sampling a 2x128 LSTM with --mix against plain sampling (interleaved, three times).
- `--adapt` with a 20 KB prime of held-out code: how often the names of the prime that the
  training text never has turn up in 10 continuations, with and without it; and what --mix does
  to copying (`--novelty`'s longest copied stretch) beside what it does to the loss.
- With --tune: the adaptation's rule, step size, segment and decay, the text's own counts'
  order and discount, the match model's lengths and the records' windows, each tried on the
  validation texts of both runs (never the texts the code targets are measured on); of the
  settings fast enough for the speed target with a margin of 25% (a segment length's speed
  measured on a 2x128) and within 0.002 nats of the best, the cheapest (the longest segment,
  the lowest order, the fewest windows and lengths) is chosen, and charrnn's defaults are those.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_results  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
HELD_OUT = ("argparse.py", "difflib.py", "email/", "json/")  # whole modules, by name
TARGETS = {"code_below_static": 0.45, "code_below_ngram": 0.35, "code_below_bz2": 0.35,
           "prose_below_static": 0.17, "adapt_chars_per_s": 25_000, "mix_speed_ratio": 0.5,
           "adapt_name_ratio": 2.0, "streams_within": 0.02}


def stdlib_split(folder: Path) -> tuple[Path, Path]:
    """This Python's standard library as charrnn's python-stdlib recipe builds it, the modules
    of HELD_OUT written apart: (training file, held-out file)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
    files = []
    for parent, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files += [Path(parent, n) for n in sorted(names) if n.endswith(".py")]
    train, held = folder / "stdlib-train.py.txt", folder / "stdlib-heldout.py.txt"
    with open(train, "wb") as tr, open(held, "wb") as ho:
        for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
            rel = f.relative_to(root).as_posix()
            text = f.read_bytes().decode("utf-8", "replace")
            block = f"# {rel}\n{text.rstrip()}\n\n".encode("utf-8", "surrogateescape")
            (ho if rel.startswith(HELD_OUT) else tr).write(block)
    return train, held


def charrnn(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)],
                          capture_output=True, text=True, env=env, check=True)


def train(corpus: Path, out: Path) -> dict:
    start = time.perf_counter()
    done = charrnn("train", corpus, "--time", "4m", "--out", out)
    config = json.loads((out / "config.json").read_text())
    m = config["model"]
    return {"corpus": corpus.name, "model": f"{m['layers']}x{m['hidden_size']} {m['model']}",
            "wall_s": time.perf_counter() - start, "best_val_loss": config["best_val_loss"],
            "last_line": [line for line in done.stderr.splitlines() if "stopped" in line][-1:]}


def evaluate(run: Path, text: Path | None) -> dict:
    start = time.perf_counter()
    out = charrnn("eval", run, *([text] if text else []), "--json")
    result = json.loads(out.stdout)
    rows = {r["name"]: r["nats"] for r in result["rows"]}
    networks = [v for k, v in rows.items() if k.startswith("charrnn")]
    ngrams = [v for k, v in rows.items() if k.endswith("gram")]
    best = min(networks)
    return {"text": result["text"], "characters": result["characters"], "rows": result["rows"],
            "seconds": time.perf_counter() - start, "best": best,
            "below_static": rows["charrnn"] - best, "below_ngram": min(ngrams) - best,
            "below_bz2": rows["bz2"] - best}


def readings(run: Path, ids: np.ndarray):
    """The run's readings of `ids` (every model), its validation text's first part, levels."""
    from charrnn import checkpoint, threads
    from charrnn.evaluation import counts, mixing

    model, vocab, config = checkpoint.load(run)
    workers = threads.configure().count
    _, val = counts.training_ids(config, vocab)
    counted = counts.of_run(config, vocab)
    fit_part = val[: 200_001]
    return (mixing.read(model, ids, counted, len(vocab), True, workers),
            mixing.read(model, fit_part, counted, len(vocab), True, workers), model, vocab)


def gate_against_fixed(run: Path, ids: np.ndarray) -> dict:
    """Each mixture with charrnn's gate, with fixed weights, and with a larger gate (a two-layer
    network of 16 tanh units on the same features), each fitted on the validation text: the
    static one, the adapting one without the match model and the records (`sample --adapt
    --mix`'s), and `eval`'s adapting row (`reading`)."""
    from charrnn.evaluation.mixture import fit

    scored, fitted, _, _ = readings(run, ids)
    out = {}
    for kind in ("static", "adapting", "reading"):
        for name, single in (("gate", False), ("fixed", True)):
            g = fit(*fitted.inputs(kind), single=single)
            ps, x = scored.inputs(kind)
            out[f"{kind}_{name}"] = float(-np.log(g.mix(ps, x)).mean())
        out[f"{kind}_mlp16"] = float(-np.log(mlp_gate(*fitted.inputs(kind))(
            *scored.inputs(kind))).mean())
    return out


def mlp_gate(ps, x, hidden: int = 16, iterations: int = 100):
    """A larger gate, for comparison: softmax(W2 tanh(W1 x' + b1) + b2), x' standardised."""
    import torch

    torch.manual_seed(0)
    p, xs = torch.from_numpy(np.stack(ps, 1)[:200_000]), torch.from_numpy(x[:200_000])
    mu, sd = xs.mean(0), xs.std(0) + 1e-6
    mu[0], sd[0] = 0.0, 1.0
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.Tanh(),
                              torch.nn.Linear(hidden, len(ps))).double()
    optimizer = torch.optim.LBFGS(net.parameters(), max_iter=iterations,
                                  line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = -torch.log((torch.softmax(net((xs - mu) / sd), 1) * p).sum(1)).mean()
        value.backward()
        return value

    optimizer.step(loss)

    def mix(ps2, x2):
        with torch.no_grad():
            w = torch.softmax(net((torch.from_numpy(x2) - mu) / sd), 1)
            return (w * torch.from_numpy(np.stack(ps2, 1))).sum(1).numpy()
    return mix


def streams_against_one(run: Path, ids: np.ndarray) -> dict:
    """The loss of the parallel streams against one learner reading the whole text in order."""
    from charrnn import adapt, checkpoint

    model, _, _ = checkpoint.load(run)
    start = time.perf_counter()
    parallel = adapt.read(model, ids, workers=os.cpu_count() or 1)
    parallel_s = time.perf_counter() - start
    start = time.perf_counter()
    with adapt.one_thread():
        one = adapt.Learner(model).read(ids)
    one_s = time.perf_counter() - start
    return {"characters": int(len(ids) - 1), "streams": -(-(len(ids) - 1) // adapt.STREAM),
            "parallel_nats": float(-np.log(parallel.p).mean()), "parallel_s": parallel_s,
            "sequential_nats": float(-np.log(one.p).mean()), "sequential_s": one_s}


def adapt_speed(vocab_size: int, ids: np.ndarray) -> dict:
    """chars/s of adapting a 2x128 LSTM (weights do not change the cost): streams side by side
    on every core, and one stream on one thread, interleaved, best of three."""
    import torch

    from charrnn import adapt
    from charrnn.config import ModelConfig
    from charrnn.model import CharRNN

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab_size, layers=2, hidden_size=128))
    part = ids[: 4 * adapt.STREAM + 1]
    best = {"streams": 0.0, "one": 0.0}
    for _ in range(3):
        start = time.perf_counter()
        adapt.read(model, part, workers=os.cpu_count() or 1)
        best["streams"] = max(best["streams"], (len(part) - 1) / (time.perf_counter() - start))
        start = time.perf_counter()
        adapt.read(model, part[: adapt.STREAM + 1], workers=1)
        best["one"] = max(best["one"], adapt.STREAM / (time.perf_counter() - start))
    return {"model": "2x128 lstm", "characters": int(len(part) - 1), "cores": os.cpu_count(),
            "streams_chars_per_s": best["streams"], "one_stream_chars_per_s": best["one"]}


def mix_speed(run: Path, n: int = 20_000) -> dict:
    """chars/s of sampling a 2x128 LSTM with --mix (the counts and the gate of `run`: the
    weights do not change the cost) against plain sampling, in this process, interleaved,
    three times each; the median of each."""
    import torch

    import charrnn
    from charrnn.config import ModelConfig, SampleConfig
    from charrnn.evaluation import mixing
    from charrnn.model import CharRNN
    from charrnn.sample import generate, seeded

    r = charrnn.load(run)
    _, mixer = r.sampler("", mix=True)  # the counts and the gate, fitted and cached first
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(r.vocab), layers=2, hidden_size=128)).eval()
    assert isinstance(mixer, mixing.Mixer)
    plain, mixed = [], []
    for rep in range(3):
        for mix, into in ((None, plain), (mixer, mixed)):
            start = time.perf_counter()
            "".join(generate(model, r.vocab, "", SampleConfig(length=n), seeded(rep),
                             mixer=mix))
            into.append(n / (time.perf_counter() - start))
    return {"model": "2x128 lstm", "characters": n,
            "plain_chars_per_s": float(np.median(plain)),
            "mix_chars_per_s": float(np.median(mixed)),
            "ratio": float(np.median(mixed) / np.median(plain))}


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")


def prime_names(run: Path, train_text: str, held: str, prime_chars: int = 20_000,
                samples: int = 10, length: int = 2000) -> dict:
    """How often the names of a held-out prime that the training text never has turn up in
    continuations, with --adapt and without; and the longest stretch copied from the training
    text (what `--novelty` reports), with --mix and without."""
    import charrnn
    from charrnn.evaluation import counts
    from charrnn.evaluation.novelty import longest_copy

    r = charrnn.load(run)
    train_ids, _ = counts.training_ids(r.config, r.vocab)
    start = held.index("# email/message.py")
    prime = held[start: start + prime_chars]
    known = set(NAME.findall(train_text))
    new = {w for w in NAME.findall(prime) if w not in known}
    uses, copied = {}, {}
    for name, kw in (("plain", {}), ("adapt", {"adapt": True}), ("mix", {"mix": True}),
                     ("adapt_mix", {"adapt": True, "mix": True})):
        texts = [r.sample(length, prime=prime, seed=s, **kw) for s in range(samples)]
        uses[name] = sum(len([w for w in NAME.findall(t) if w in new]) for t in texts)
        copied[name] = float(np.mean([longest_copy(r.vocab.encode(t).astype(np.int64),
                                                   train_ids).length for t in texts]))
    return {"prime_characters": len(prime), "names_only_in_prime": len(new),
            "samples": samples, "length": length, "name_uses": uses,
            "ratio": uses["adapt"] / max(uses["plain"], 1), "mean_longest_copy": copied}


RULES = ([{"rule": "rms", "lr": lr, "segment": seg, "decay": decay}
          for lr in (5e-4, 1e-3, 2e-3) for seg in (32, 64) for decay in (0.0, 1e-3)]
         + [{"rule": "sgd", "lr": lr, "segment": 64, "decay": 0.0} for lr in (0.1, 0.2)])
OWN = [(order, discount) for order in (8, 16, 24) for discount in (0.5, 0.6, 0.8)]
MATCH_LENGTHS = [(8, 16, 32), (6, 8, 12, 16, 20, 24, 32, 48, 64),
                 (12, 16, 24, 32, 48, 64, 96, 128)]
RECORD_WINDOWS = [(), (16, 256), (8, 64, 512), (4, 32, 256, 2048)]


def tune(runs: list[Path], chars: int = 100_000) -> dict:
    """Each adaptation setting, then each order and discount of the text's own counts, then the
    match model's lengths and the records' windows (`tune_reading`), scored by
    the final row (the adapting mixture, its gate fitted on the other half) on the first
    `chars` of each run's validation text: texts the targets are never measured on, except
    tiny Shakespeare's, whose first half this is (its second half is reported apart)."""
    from concurrent.futures import ThreadPoolExecutor

    from charrnn import adapt, checkpoint
    from charrnn.evaluation import counts, mixing, ngram

    texts, own_default = [], mixing.OWN_ORDER
    for run in runs:
        model, vocab, config = checkpoint.load(run)
        _, val = counts.training_ids(config, vocab)
        ids = val[: min(chars, len(val) // 2) + 1]
        texts.append((run.name, model, vocab, ids, counts.of_run(config, vocab)))

    def final(name, model, vocab, ids, counted, reading, own=(mixing.OWN_ORDER,
                                                                  mixing.OWN_DISCOUNT)):
        mixing.OWN_ORDER = own[0]  # (what the gate's features are scaled by)
        r = mixing.Readings(adapt.static(model, ids), ngram.score(counted, ids, len(vocab)),
                            reading, ngram.reading(ids, len(vocab), *own))
        return float(-np.log(mixing.crossed(r, "adapting")).mean())

    rows = []
    for how in RULES:
        row = {**how}
        with adapt.one_thread(), ThreadPoolExecutor(2) as pool:
            reads = list(pool.map(lambda t, how=how: adapt.Learner(
                t[1], adapt.Adaptation(**how)).read(t[3]), texts))
        for t, reading in zip(texts, reads):
            row[t[0]] = {"adapting": float(-np.log(reading.p).mean()),
                         "final": final(*t, reading)}
        row["mean_final"] = float(np.mean([row[t[0]]["final"] for t in texts]))
        rows.append(row)
        print("tune", row, flush=True)
    speeds = segment_speeds(sorted({r["segment"] for r in rows}), len(texts[0][2]))
    fast = [r for r in rows
            if speeds[r["segment"]] >= SPEED_MARGIN * TARGETS["adapt_chars_per_s"]]
    best = cheapest(fast or rows, lambda r: -r["segment"])  # a longer segment reads faster
    how = {k: best[k] for k in ("rule", "lr", "segment", "decay")}
    with adapt.one_thread():
        reads = [adapt.Learner(t[1], adapt.Adaptation(**how)).read(t[3]) for t in texts]
    own_rows = []
    for order, discount in OWN:
        row = {"order": order, "discount": discount}
        for t, reading in zip(texts, reads):
            row[t[0]] = final(*t, reading, own=(order, discount))
        row["mean_final"] = float(np.mean([row[t[0]] for t in texts]))
        own_rows.append(row)
        print("tune own", row, flush=True)
    mixing.OWN_ORDER = own_default
    reading_rows = tune_reading(texts, reads)
    static = {t[0]: float(-np.log(adapt.static(t[1], t[3]).p).mean()) for t in texts}
    return {"characters": {t[0]: int(len(t[3]) - 1) for t in texts}, "static": static,
            "adaptation": rows, "segment_chars_per_s": speeds, "chosen_adaptation": how,
            "own_counts": own_rows,
            "chosen_own": cheapest(own_rows, lambda r: r["order"]),
            "reading": reading_rows,
            "chosen_reading": cheapest(reading_rows, lambda r: (len(r["windows"]),
                                                                len(r["lengths"]))),
            "tolerance": TOLERANCE}


def tune_reading(texts, reads) -> list[dict]:
    """The reading mixture (`eval`'s adapting row) with each set of the match model's lengths
    and of the windows the models' records are kept over, on the same validation texts."""
    from charrnn import adapt
    from charrnn.evaluation import match_model, mixing, ngram

    rows, default = [], mixing.RECORD_WINDOWS
    for lengths in MATCH_LENGTHS:
        for windows in RECORD_WINDOWS:
            mixing.RECORD_WINDOWS = windows  # (what the gate's features are read over)
            row = {"lengths": list(lengths), "windows": list(windows)}
            for (name, model, vocab, ids, counted), reading in zip(texts, reads):
                r = mixing.Readings(adapt.static(model, ids),
                                    ngram.score(counted, ids, len(vocab)), reading,
                                    ngram.reading(ids, len(vocab), mixing.OWN_ORDER,
                                                  mixing.OWN_DISCOUNT),
                                    match_model.reading(ids, len(vocab), lengths))
                row[name] = float(-np.log(mixing.crossed(r, "reading")).mean())
            row["mean_final"] = float(np.mean([row[t[0]] for t in texts]))
            rows.append(row)
            print("tune reading", row, flush=True)
    mixing.RECORD_WINDOWS = default
    return rows


TOLERANCE = 0.002  # nats: a setting this close to the best is as good, and the cheaper wins
SPEED_MARGIN = 1.25  # a segment fast enough by one measurement on one machine: with room, as a
# machine's speed drifts by a fifth within minutes (one at 25,300 chars/s here, 23,200 before)


def segment_speeds(segments: list[int], vocab_size: int) -> dict[int, float]:
    """chars/s of adapting a 2x128 LSTM with each segment length, streams on every core."""
    import torch

    from charrnn import adapt
    from charrnn.config import ModelConfig
    from charrnn.model import CharRNN

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab_size, layers=2, hidden_size=128))
    ids = np.random.default_rng(0).integers(0, vocab_size, 4 * adapt.STREAM + 1)
    speeds = {}
    for segment in segments:
        start = time.perf_counter()
        adapt.read(model, ids, adapt.Adaptation(segment=segment), workers=os.cpu_count() or 1)
        speeds[segment] = (len(ids) - 1) / (time.perf_counter() - start)
    return speeds


def cheapest(rows: list[dict], cost) -> dict:
    """The cheapest of the rows whose mean final loss is within TOLERANCE of the best."""
    best = min(r["mean_final"] for r in rows)
    near = [r for r in rows if r["mean_final"] <= best + TOLERANCE]
    return min(near, key=lambda r: (cost(r), r["mean_final"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="also the grid of settings")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "adapt.json")
    parser.add_argument("--runs", type=Path, help="train the runs into this folder and keep "
                        "them, or reuse those it holds (py, ts)")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.setdefault("CHARRNN_CACHE_DIR", str(folder / "cache"))
        runs = args.runs or folder
        runs.mkdir(parents=True, exist_ok=True)
        train_file, held_file = stdlib_split(folder)
        py, ts = runs / "py", runs / "ts"
        for key, corpus, run in (("train_code", train_file, py),
                                 ("train_prose", TINYSHAKESPEARE, ts)):
            record = runs / f"{run.name}.train.json"  # (so that --runs can pick up from here)
            if corpus.exists() and not (run / "config.json").exists():
                record.write_text(json.dumps(train(corpus, run)))
            if record.exists():
                results[key] = json.loads(record.read_text())
                print("trained", results[key], flush=True)
        results["code"] = evaluate(py, held_file)
        print("code", {k: v for k, v in results["code"].items() if k != "rows"}, flush=True)
        from charrnn import checkpoint

        _, vocab, _ = checkpoint.load(py)
        held_ids = vocab.encode(held_file.read_text()).astype(np.int64)
        results["code_gate"] = gate_against_fixed(py, held_ids)
        print("code gate", results["code_gate"], flush=True)
        results["streams"] = streams_against_one(py, held_ids)
        print("streams", results["streams"], flush=True)
        results["adapt_speed"] = adapt_speed(len(vocab), held_ids)
        print("adapt speed", results["adapt_speed"], flush=True)
        results["prime"] = prime_names(py, train_file.read_text(), held_file.read_text())
        print("prime", results["prime"], flush=True)
        if TINYSHAKESPEARE.exists():
            results["prose"] = evaluate(ts, None)
            print("prose", {k: v for k, v in results["prose"].items() if k != "rows"},
                  flush=True)
            results["mix_speed"] = mix_speed(ts)
            print("mix speed", results["mix_speed"], flush=True)
        if args.tune:
            results["tune"] = tune([py] + ([ts] if TINYSHAKESPEARE.exists() else []))
    results["targets"] = TARGETS
    write_results(args.json, results)


if __name__ == "__main__":
    main()
