"""The tables of docs/ rendered from the results files under benchmarks/results/.

    python benchmarks/render.py           # rewrite every table in docs/ from its results file
    python benchmarks/render.py --check   # say which tables differ from their results (exit 1)

A table in a page sits between two markers naming its results file and its table:

    <!-- results: adapt.json rows -->
    | ... |
    <!-- end results -->

and is exactly what `TABLES[name](results)` renders; tests/test_docs.py fails when it is not.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKED = re.compile(r"(<!-- results: (\S+) (\S+) -->\n)(.*?)(<!-- end results -->)", re.S)


def _source(r: dict) -> str:
    return (f"*{r['machine']}, {r['date']}, commit {r['commit']}: `{r['command']}`*\n")


def _adapt_rows(r: dict) -> str:
    code, prose = r["code"], r.get("prose")
    names = [row["name"] for row in code["rows"]]
    prose_rows = {row["name"]: row["nats"] for row in prose["rows"]} if prose else {}
    lines = [f"| model | held-out code ({code['characters']:,} characters) | tiny Shakespeare "
             f"validation ({prose['characters']:,} characters) | saw the training text | "
             "adapts as it reads |" if prose else "| model | held-out code | saw the training "
             "text | adapts as it reads |",
             "|---|---|---|---|---|" if prose else "|---|---|---|---|"]
    by_name = {row["name"]: row for row in code["rows"]}
    best = code["best"]
    for name in names:
        row = by_name[name]
        nats = f"**{row['nats']:.3f}**" if row["nats"] == best else f"{row['nats']:.3f}"
        cells = [name, nats]
        if prose:
            p = prose_rows.get(name)
            cells.append("" if p is None else (f"**{p:.3f}**" if p == prose["best"] else
                                               f"{p:.3f}"))
        cells += ["yes" if row["uses_training_text"] else "no",
                  "yes" if row["adapts"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    models = (f"code: {r['train_code']['model']}" if "train_code" in r else "") + \
        (f"; prose: {r['train_prose']['model']}" if "train_prose" in r else "")
    return "\n".join(lines) + f"\n\nnats per character; the runs: {models}.\n" + _source(r)


def _adapt_targets(r: dict) -> str:
    t, code, prose = r["targets"], r["code"], r.get("prose")
    rows = [("held-out code: best charrnn row below the network as trained",
             code["below_static"], t["code_below_static"]),
            ("held-out code: below the best n-gram", code["below_ngram"],
             t["code_below_ngram"]),
            ("held-out code: below bz2", code["below_bz2"], t["code_below_bz2"])]
    if prose:
        rows.append(("tiny Shakespeare: best charrnn row below the network as trained",
                     prose["below_static"], t["prose_below_static"]))
    s = r["streams"]
    rows.append(("parallel streams against one sequential reading (nats, at most)",
                 s["parallel_nats"] - s["sequential_nats"], t["streams_within"]))
    a = r["adapt_speed"]
    rows.append((f"adapting a {a['model']}, streams on {a['cores']} cores (chars/s)",
                 a["streams_chars_per_s"], t["adapt_chars_per_s"]))
    if "mix_speed" in r:
        rows.append((f"sampling a {r['mix_speed']['model']} with --mix, against plain "
                     "sampling", r["mix_speed"]["ratio"], t["mix_speed_ratio"]))
    lines = ["| what | measured | target | met |", "|---|---|---|---|"]
    for what, value, target in rows:
        at_most = "at most" in what
        met = value <= target if at_most else value >= target
        shown = f"{value:,.0f}" if value >= 1000 else f"{value:.3f}"
        lines.append(f"| {what} | {shown} | {'<=' if at_most else '>='} {target:,} | "
                     f"{'yes' if met else '**no**'} |")
    uses = r["prime"]["name_uses"]
    met = uses["adapt"] > 0 and uses["adapt"] >= t["adapt_name_ratio"] * uses["plain"]
    lines.append(f"| --adapt on a 20 KB prime: uses of the names only the prime has, with "
                 f"against without | {uses['adapt']} against {uses['plain']} | "
                 f"{t['adapt_name_ratio']:g} times as many | {'yes' if met else '**no**'} |")
    return "\n".join(lines) + "\n\n" + _source(r)


def _adapt_details(r: dict) -> str:
    g, s, a, p = r["code_gate"], r["streams"], r["adapt_speed"], r["prime"]
    lines = ["| measurement | figure |", "|---|---|",
             f"| mixture, one fixed weight / the gate / a 16-unit two-layer gate (held-out "
             f"code, nats) | {g['static_fixed']:.3f} / {g['static_gate']:.3f} / "
             f"{g['static_mlp16']:.3f} |",
             f"| adapting mixture without the match model and the records (`sample --adapt "
             f"--mix`'s), the same three | {g['adapting_fixed']:.3f} / "
             f"{g['adapting_gate']:.3f} / {g['adapting_mlp16']:.3f} |",
             f"| adapting mixture with them (`eval`'s adapting row), the same three | "
             f"{g['reading_fixed']:.3f} / {g['reading_gate']:.3f} / "
             f"{g['reading_mlp16']:.3f} |",
             f"| held-out code in {s['streams']} parallel streams / in one sequential reading "
             f"(nats) | {s['parallel_nats']:.4f} / {s['sequential_nats']:.4f} |",
             f"| the same, seconds | {s['parallel_s']:.1f} / {s['sequential_s']:.1f} |",
             f"| adapting a {a['model']}: streams on {a['cores']} cores / one stream on one "
             f"thread (chars/s) | {a['streams_chars_per_s']:,.0f} / "
             f"{a['one_stream_chars_per_s']:,.0f} |"]
    if "mix_speed" in r:
        m = r["mix_speed"]
        lines.append(f"| sampling a {m['model']}: plain / --mix (chars/s) | "
                     f"{m['plain_chars_per_s']:,.0f} / {m['mix_chars_per_s']:,.0f} |")
    u, c = p["name_uses"], p["mean_longest_copy"]
    lines += [f"| uses of the prime's {p['names_only_in_prime']} new names in {p['samples']} "
              f"continuations of {p['length']:,} characters: plain / --adapt / --mix / "
              f"--adapt --mix | {u['plain']} / {u['adapt']} / {u['mix']} / {u['adapt_mix']} |",
              f"| the longest stretch copied from the training text, mean of the same "
              f"continuations (characters) | {c['plain']:.1f} / {c['adapt']:.1f} / "
              f"{c['mix']:.1f} / {c['adapt_mix']:.1f} |"]
    return "\n".join(lines) + "\n\n" + _source(r)


def _adapt_tune(r: dict) -> str:
    t = r["tune"]
    runs = list(t["characters"])
    lines = ["| rule | step size | segment | decay | " + " | ".join(
        f"{name}: adapting / final" for name in runs) + " | mean final |",
        "|---|---|---|---|" + "---|" * len(runs) + "---|"]
    for row in t["adaptation"]:
        chosen = all(row[k] == t["chosen_adaptation"][k] for k in t["chosen_adaptation"])
        cells = [row["rule"], f"{row['lr']:g}", str(row["segment"]), f"{row['decay']:g}"]
        cells += [f"{row[n]['adapting']:.4f} / {row[n]['final']:.4f}" for n in runs]
        cells.append(f"**{row['mean_final']:.4f}**" if chosen else f"{row['mean_final']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| the text's own counts: order | discount | " + " | ".join(runs) +
              " | mean final |", "|---|---|" + "---|" * len(runs) + "---|"]
    for row in t["own_counts"]:
        chosen = (row["order"], row["discount"]) == (t["chosen_own"]["order"],
                                                     t["chosen_own"]["discount"])
        cells = [str(row["order"]), f"{row['discount']:g}"]
        cells += [f"{row[n]:.4f}" for n in runs]
        cells.append(f"**{row['mean_final']:.4f}**" if chosen else f"{row['mean_final']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| the match model's lengths | the records' windows | " + " | ".join(runs) +
              " | mean final |", "|---|---|" + "---|" * len(runs) + "---|"]
    for row in t["reading"]:
        chosen = (row["lengths"], row["windows"]) == (t["chosen_reading"]["lengths"],
                                                      t["chosen_reading"]["windows"])
        cells = [", ".join(map(str, row["lengths"])), ", ".join(map(str, row["windows"])) or
                 "none"] + [f"{row[n]:.4f}" for n in runs]
        cells.append(f"**{row['mean_final']:.4f}**" if chosen else f"{row['mean_final']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    static = ", ".join(f"{n} {v:.4f}" for n, v in t["static"].items())
    speeds = ", ".join(f"segment {k}: {v:,.0f} chars/s" for k, v in
                       t["segment_chars_per_s"].items())
    return ("\n".join(lines) + f"\n\nOn the first {min(t['characters'].values()):,} to "
            f"{max(t['characters'].values()):,} characters of each run's validation text "
            f"(the network as trained: {static}). Adapting a 2x128 LSTM: {speeds} (target "
            f"{r['targets']['adapt_chars_per_s']:,}). Chosen (bold): of the settings fast "
            f"enough with a margin of 25%, the cheapest within {t['tolerance']} nats of the "
            f"best.\n\n" + _source(r))


def _residual(r: dict) -> str:
    lines = ["| same size, same loop, same wall-clock budget | nats on the second half of the "
             "validation text | steps |", "|---|---|---|",
             f"| the network alone | {r['plain_nats']:.3f} | {r['plain_steps']:,} |",
             f"| the counts alone (10-gram Kneser-Ney) | {r['counts_nats']:.3f} | |",
             f"| the network mixed with the counts by charrnn's gate | "
             f"**{r['plain_mixed_nats']:.3f}** | {r['plain_steps']:,} |",
             f"| trained against the counts (residual), after {r['counting_seconds']:.0f} s of "
             f"counting | {r['residual_nats']:.3f} | {r['residual_steps']:,} |"]
    return "\n".join(lines) + "\n\n" + _source(r)


def _budget(r: dict) -> str:
    lo, hi = r["target"]
    lines = ["| run | model | wall time / budget | ended | steps | speed: calibrated / last "
             "re-plan / whole run (chars/s) | last lr / the schedule's last | --plan-from: "
             "same losses | best loss: --time / the same plan as --max-steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        last = x["replanned_chars_per_s"][-1] if x["replanned_chars_per_s"] else float("nan")
        inside = lo <= x["ratio"] <= hi
        lines.append(
            f"| {x['corpus']} `--time {x['seconds']:g}s` | {x['model']} | {x['wall_s']:.1f} s, "
            f"**{x['ratio']:.3f}**{'' if inside else ' (outside the target)'} | "
            f"{x['stopped']} | {x['steps']:,} of {x['planned_end']:,} planned, {x['replans']} "
            f"re-plans | {x['calibrated_chars_per_s']:,.0f} / {last:,.0f} / "
            f"{x['measured_chars_per_s']:,.0f} | {x['last_lr']:.2e} / "
            f"{x['schedule_last_lr']:.2e} | {'yes' if x['plan_from_same_losses'] else '**no**'} "
            f"| {x['best_val_loss']:.4f} / {x['max_steps_best_val_loss']:.4f} |")
    rows = r["rows"]
    ratios = [x["ratio"] for x in rows]
    planned = sum(x["steps"] == x["planned_end"] for x in rows)
    last_lr = sum(math.isclose(x["last_lr"], x["schedule_last_lr"], rel_tol=1e-6) for x in rows)
    repeated = sum(x["plan_from_same_losses"] for x in rows)
    diffs = ", ".join(f"{x['best_val_loss'] - x['max_steps_best_val_loss']:+.4f}" for x in rows)
    return ("\n".join(lines) + f"\n\nTarget: the command's wall time between {lo} and {hi} of "
            f"its budget. Measured: {planned} of {len(rows)} runs ended at their planned end, "
            f"between **{min(ratios):.3f}** and **{max(ratios):.3f}** of their budget; {last_lr} "
            f"of {len(rows)} with the schedule's last learning rate; `--plan-from` repeated "
            f"{repeated} of {len(rows)} loss for loss; `--time` against the same plan as "
            f"`--max-steps`, best loss: {diffs}.\n\n" + _source(r))


def _grid(corpus: str):
    names = {"tinyshakespeare": "tiny Shakespeare", "stdlib": "python-stdlib (3M characters)"}

    def table(r: dict) -> str:
        rows = [x for x in r["rows"] if x["corpus"] == corpus and x["dropout"] == 0]
        sizes = sorted({x["hidden_size"] for x in rows})
        lines = [f"| {names[corpus]}, D | " + " | ".join(f"2x{h}" for h in sizes) + " |",
                 "|---|" + "---|" * len(sizes)]
        for d in sorted({x["chars_seen"] for x in rows}):
            at = {x["hidden_size"]: x["best_val_loss"] for x in rows if x["chars_seen"] == d}
            best = min(at.values())
            cells = [("" if h not in at else f"**{at[h]:.3f}**" if at[h] == best else
                      f"{at[h]:.3f}") for h in sizes]
            lines.append(f"| {d / 1e6:.2f}M | " + " | ".join(cells) + " |")
        dropout = [x for x in r["rows"] if x["corpus"] == corpus and x["dropout"] > 0]
        return "\n".join(lines) + (f"\n\n{len(rows)} runs without dropout, {len(dropout)} with;"
                                   " `benchmarks/grid/grid.jsonl`, written by "
                                   "`python benchmarks/grid.py` (in characters, not seconds: "
                                   "the same on any machine).\n")
    return table


def _fit(r: dict) -> str:
    return (f"| k (characters per recurrent parameter) | repeat decay | mean regret | largest "
            f"regret | cases | grid points | dropout from |\n|---|---|---|---|---|---|---|\n"
            f"| {r['chars_per_parameter']} | {r['repeat_decay']:g} | {r['mean_regret']:.3f} | "
            f"{r['max_regret']:.3f} | {r['scenarios']} | {r['grid_points']} | "
            f"{r['dropout_from']:g} (helped from {r['dropout_helped_from']:.1f}, hurt below "
            f"{r['dropout_hurt_below']:.1f}) |\n\n`benchmarks/grid/fit.json`, written by "
            "`python benchmarks/fit.py`.\n")


def _speed(r: dict) -> str:
    lines = ["| what | charrnn | baseline in the same run | ratio |", "|---|---|---|---|"]
    for t in r.get("training", []):
        lines.append(f"| training step, {t['config']} | {t['charrnn_chars_per_s']:,.0f} chars/s "
                     f"({t['gflops']:.0f} GFLOP/s, {t['fraction_of_peak']:.0%} of the "
                     f"{r['matmul_peak_gflops']:.0f} GFLOP/s matmul peak) | plain loop "
                     f"{t['reference_chars_per_s']:,.0f} chars/s | {t['ratio']:.3f}x |")
    if "encoding" in r:
        e = r["encoding"]
        lines.append(f"| encoding a generated {e['megabytes']:.0f} MB UTF-8 text "
                     f"({e['distinct']} distinct characters) | {e['mb_per_s']:.0f} MB/s, "
                     f"{e['peak_rss_mb']:.0f} MB peak resident | | |")
    if "big_corpus" in r:
        b = r["big_corpus"]
        lines.append(f"| training on a generated 1 GB corpus (encode, then 40 steps of a 2x384 "
                     f"LSTM) | {b['peak_rss_mb']:.0f} MB peak resident, {b['seconds']:.0f} s "
                     "| | |")
    return "\n".join(lines) + "\n\n" + _source(r)


def _sampling(r: dict) -> str:
    lines = ["| model | charrnn | fused module, cold | warmed | cell modules | charrnn / each | "
             "same text as the straightforward path |", "|---|---|---|---|---|---|---|"]
    for x in r.get("sampling", []):
        lines.append(f"| {x['config']} | {x['charrnn_chars_per_s']:,.0f} chars/s | "
                     f"{x['plain_chars_per_s']:,.0f} | {x['warm_chars_per_s']:,.0f} | "
                     f"{x['cells_chars_per_s']:,.0f} | {x['ratio']:.1f}x / {x['ratio_warm']:.1f}x"
                     f" / {x['ratio_cells']:.1f}x | {'yes' if x['same_text'] else '**no**'} "
                     f"({x['checked_chars']:,} characters) |")
    return "\n".join(lines) + "\n\n" + _source(r)


def _beam(r: dict) -> str:
    lines = ["| model | a beam of 8, 2,000 characters | 8 samples of 2,000 characters | the beam's "
             "speed against the samples' |", "|---|---|---|---|"]
    for x in r["rows"]:
        lines.append(f"| {x['model']} | {x['beam_s']:.2f} s | {x['samples_s']:.2f} s | "
                     f"**{x['speed_ratio']:.2f}x** |")
    return ("\n".join(lines) + f"\n\nTarget: at least {r['target']}x.\n\n" + _source(r))


def _serve(r: dict) -> str:
    one, many, t = r["single"], r["load"], r["targets"]
    lines = ["| clients | requests | completed | 503 | failed | first character, median / 95th "
             "percentile |", "|---|---|---|---|---|---|"]
    for x in (one, many):
        lines.append(f"| {x['clients']} for {x['seconds']:g} s | {x['requests']:,} | "
                     f"{x['completed']:,} | {x['busy_503']} | {len(x['failures'])} | "
                     f"{x['ttfc_median_s'] * 1000:.1f} ms / {x['ttfc_p95_s'] * 1000:.1f} ms |")
    return ("\n".join(lines) + f"\n\nThe 95th percentile of the time to the first character "
            f"with {many['clients']} clients: **{r['ttfc_p95_ratio']:.1f}x** one client's "
            f"(target: within {t['ttfc_p95_ratio']:g}x). The server's resident memory: "
            f"{r['rss_10s_kb'] / 1024:,.0f} MB at the 10th second, {r['rss_end_kb'] / 1024:,.0f}"
            f" MB at the end, **{r['rss_growth']:+.1%}** (target: within "
            f"{t['rss_growth']:.0%}). A client that disconnected mid-stream: the server idle "
            f"again after **{r['freed_s']:.2f} s** (target: within {t['freed_s']:g} s).\n\n"
            + _source(r))


def _budget_seeds(r: dict) -> str:
    lines = ["| seed | steps | best loss: --time | the same plan as --max-steps | difference | "
             "--max-steps one step longer | difference |", "|---|---|---|---|---|---|---|"]
    for x in r["pairs"]:
        d = x["time_best_val_loss"] - x["max_steps_best_val_loss"]
        e = x["one_step_more_best_val_loss"] - x["max_steps_best_val_loss"]
        lines.append(f"| {x['seed']} | {x['steps']:,} | {x['time_best_val_loss']:.4f} | "
                     f"{x['max_steps_best_val_loss']:.4f} | {d:+.4f} | "
                     f"{x['one_step_more_best_val_loss']:.4f} | {e:+.4f} |")

    def tally(key: str, who: str) -> str:
        diffs = [x[key] - x["max_steps_best_val_loss"] for x in r["pairs"]]
        better, worse = sum(d <= -5e-5 for d in diffs), sum(d >= 5e-5 for d in diffs)
        ties = len(diffs) - better - worse  # (the same to the 4 decimals shown)
        return (f"{who} the better in {better} of {len(diffs)}, the worse in {worse}"
                + (f", the same to 4 decimals in {ties}" if ties else "") + "; the mean "
                f"difference **{statistics.mean(diffs):+.4f}** (its standard error "
                f"{statistics.stdev(diffs) / len(diffs) ** 0.5:.4f}), the largest either way "
                f"{min(diffs):+.4f} and {max(diffs):+.4f}, the standard deviation of one "
                f"pair {statistics.stdev(diffs):.4f}")

    return (f"{r['corpus']}, `--time {r['seconds']:g}s`:\n\n" + "\n".join(lines) + "\n\n"
            + tally("time_best_val_loss", "`--time`") + ".\n\n"
            + tally("one_step_more_best_val_loss", "The `--max-steps` run one step longer")
            + ".\n\n" + _source(r))


def _contention(r: dict) -> str:
    c = r["contention"]
    policies = ("fixed", "auto")
    lines = ["| training, chars/s | torch's default threads | charrnn's (`--threads auto`) |",
             "|---|---|---|"]

    def speed(x: dict, quiet: float, bold: bool = False) -> str:
        ratio = f"{x['chars_per_s'] / quiet:.2f}x"
        return f"{x['chars_per_s']:,.0f} ({f'**{ratio}**' if bold else ratio})"

    for row in c["training"]:
        quiet = {k: row["quiet_" + k]["chars_per_s"] for k in policies}
        cells = {"quiet": [f"{quiet[k]:,.0f}" for k in policies],
                 "beside one busy core": [speed(row["busy_" + k], quiet[k], True)
                                          for k in policies],
                 "two trainings at once (each)": [
                     " and ".join(speed(x, quiet[k]) for x in row["pair_" + k])
                     for k in policies]}
        lines += [f"| {row['model']}, {what} | " + " | ".join(v) + " |"
                  for what, v in cells.items()]
    sm = c["sampling"]
    ratios = {k: sm["busy_" + k] / sm["quiet_" + k] for k in policies}
    lines.append("| sampling a 2x512 lstm (`charrnn sample`), quiet / beside one busy core | "
                 + " | ".join(f"{sm['quiet_' + k]:,.0f} / {sm['busy_' + k]:,.0f} "
                              f"(**{ratios[k]:.2f}x**)" for k in policies) + " |")
    text = "\n".join(lines) + "\n\n(x: of the same threads' quiet speed, in the same run.)"
    if c.get("budget"):
        b = c["budget"]
        q, busy = b["quiet_threads_1"], b["busy_auto"]
        gap = busy["val_loss"] - q["val_loss"]
        text += (f"\n\n`charrnn train tinyshakespeare.txt --time {b['seconds']:g}s`, nothing "
                 f"else given, beside one busy core: {busy['model']}, validation loss "
                 f"{busy['val_loss']:.4f} in {busy['wall_s']:.0f} s; the same command on the "
                 f"quiet machine with `--threads 1`: {q['model']}, {q['val_loss']:.4f} in "
                 f"{q['wall_s']:.0f} s (a gap of {gap:+.4f} nats).")
    if c.get("cache"):
        k = c["cache"]
        if k["poisoned"]["model"] == k["fresh"]["model"]:
            verdict = "the planted entry did not move the choice"
        else:
            verdict = "corrected by one run" if k["corrected"] else "not corrected by one run"
        text += (f" A calibration cache with the chosen size's entry planted 100x slow: the "
                 f"fresh choice {k['fresh']['model']}, the run on the planted cache "
                 f"{k['poisoned']['model']}, the run after it {k['after']['model']} "
                 f"({verdict}).")
    return text + "\n\n" + _source(r)


def _explore(r: dict) -> str:
    lines = [f"| on {r['characters']:,} characters through a {r['model']}, a "
             f"{r['terminal'][0]}x{r['terminal'][1]} terminal | ms |", "|---|---|"]
    lines += [f"| {what} | {seconds * 1000:.1f} |" for what, seconds in r["seconds"].items()]
    return ("\n".join(lines) + f"\n\nThe one pass of the text through the model, every state "
            f"kept, before any of it: {r['pass_s']:.1f} s.\n\n" + _source(r))


def _ngram(r: dict) -> str:
    n = r["ngram"]
    return (f"Counting every order up to {n['order']} characters of context over the first "
            f"{n['characters']:,} characters of python-stdlib: **{n['count_s']:.1f} s**, "
            f"{n['peak_rss_mb']:,.0f} MB peak resident.\n\n" + _source(r))


def _torchrun(r: dict) -> str:
    t = r["torchrun"]
    n = t["nproc"]
    lines = [f"| {t['device']}, chars/s | one process | {n} processes, the same global batch | "
             f"{n} processes, {n} times the batch |", "|---|---|---|---|"]
    for row in t["rows"]:
        one = row["one_chars_per_s"]
        lines.append(f"| {row['model']}, batch {row['batch']} x 100 | {one:,.0f} | "
                     f"{row['same_batch_chars_per_s']:,.0f} "
                     f"({row['same_batch_chars_per_s'] / one:.2f}x) | "
                     f"{row['n_times_batch_chars_per_s']:,.0f} "
                     f"({row['n_times_batch_chars_per_s'] / one:.2f}x) |")
    return "\n".join(lines) + "\n\n" + _source(r)


def _sizes(r: dict) -> str:
    seeds = r["budget"].get("seeds")
    lines = ["| corpus | --time | the automatic choice | the sizes around it, same --time | "
             "gap to the best | target | better with more time |",
             "|---|---|---|---|---|---|---|"]

    def size(x: dict) -> str:
        runs = (" (" + ", ".join(f"{v:.4f}" for v in x["seed_losses"]) + ")"
                if "seed_losses" in x else "")
        return f"2x{x['hidden_size']}, dropout {x['dropout']:g}: {x['best_val_loss']:.4f}{runs}"

    for row in r["budget"]["rows"]:
        met = row["gap"] <= row["target_gap"]
        more_time = {True: "yes", False: "no", None: "-"}[row["non_increasing"]]
        lines.append(f"| {row['corpus']} | {row['seconds']:g} s | {size(row['auto'])} | "
                     + "; ".join(size(g) for g in row["grid"])
                     + f" | {row['gap']:+.4f}{'' if met else ' (**over**)'} | "
                     f"<= {row['target_gap']:g} | {more_time} |")
    scored = (f"Each size the mean of {len(seeds)} runs, seeds {', '.join(map(str, seeds))} (each "
              "run's loss in brackets), each run's best model" if seeds else
              "Each run's best model")
    return ("\n".join(lines) + f"\n\n{scored} scored on its whole validation text (nats per "
            "character); two runs at a time, each on one thread. \"Better with more time\": the "
            "choice's loss never rises from one budget to the next on that corpus.\n\n"
            + _source(r))


def _samples(r: dict) -> str:
    x = r["samples"]
    return (f"The samples shown while training cost little: in a {x['elapsed']:.0f} s run on tiny "
            f"Shakespeare ({x['model']}), {x['evaluations']} samples of 200 characters took "
            f"{x['sample_seconds']:.2f} s, **{x['share']:.2%}** of the run.\n\n" + _source(r))


def _inspect_pass(r: dict) -> str:
    x = r["inspect"]
    return (f"{x['characters']:,} characters through a {x['model']} (untrained: the weights do "
            f"not change the cost): the pass **{x['trace_s']:.1f} s**, then every probe, the gate "
            f"table, surprisal and the HTML page **{x['views_s']:.1f} s**.\n\n" + _source(r))


def _fenced(text: str) -> str:
    """`text` as a code block, fenced by more backticks than it holds in a row."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip(chr(10))}\n{fence}\n"


def _said(r: dict) -> list[str]:
    """What the quick start's first run said, the samples shown at each evaluation left out
    (each is a 'sample at step N:' line and its text, indented)."""
    lines = r["quickstart"]["runs"][0]["stderr"].splitlines()
    return [line for line in lines if not line.startswith(("sample at step", "  "))]


def _quickstart_train(r: dict) -> str:
    said = _said(r)
    first_step = next(i for i, line in enumerate(said) if line.startswith("step "))
    end = next(i for i, line in enumerate(said) if line.startswith("stopped at step"))
    runs = r["quickstart"]["runs"]
    again = "; ".join(f"{x['model']}, {x['val_loss']:.4f}" for x in runs[1:])
    return (_fenced("\n".join(said[:first_step] + ["..."] + said[end:]))
            + f"\n(the first run on a machine charrnn had not seen: its corpus built, the machine "
            f"timed; {'again from an empty home: ' + again + '; ' if again else ''}a faster "
            "machine chooses a larger model and reaches a lower loss in the same minute)\n\n"
            + _source(r))


def _quickstart_log(r: dict) -> str:
    said = _said(r)
    evals = [i for i, line in enumerate(said) if line.startswith("step ") and "val loss" in line]
    end = next(i for i, line in enumerate(said) if line.startswith("stopped at step"))
    start = next(i for i, line in enumerate(said) if line.startswith("calibrating"))
    return (_fenced("\n".join(said[start:evals[0] + 1] + ["..."] + said[end - 2:]))
            + "\n(`charrnn train python-stdlib --time 1m 2> log.txt`, the first run on a machine "
            "charrnn had not seen; the samples shown at each evaluation are left out here)\n\n"
            + _source(r))


def _quickstart_sample(r: dict) -> str:
    return _fenced(r["quickstart"]["sample"]) + "\n" + _source(r)


def _quickstart_choice(r: dict) -> str:
    return _fenced(r["quickstart"]["choice"]) + "\n" + _source(r)


TABLES = {"speed": _speed, "beam": _beam, "serve": _serve, "budget-seeds": _budget_seeds,
          "sampling": _sampling, "grid-prose": _grid("tinyshakespeare"),
          "grid-code": _grid("stdlib"), "fit": _fit, "budget": _budget, "residual": _residual,
          "rows": _adapt_rows, "targets": _adapt_targets, "details": _adapt_details,
          "tune": _adapt_tune, "contention": _contention,
          "explore": _explore, "ngram": _ngram,
          "torchrun": _torchrun, "sizes": _sizes,
          "samples": _samples, "inspect": _inspect_pass,
          "quickstart-train": _quickstart_train, "quickstart-log": _quickstart_log,
          "quickstart-sample": _quickstart_sample, "quickstart-choice": _quickstart_choice}


def render(text: str) -> str:
    """`text` with every marked table rendered from its results file."""
    def one(m: re.Match) -> str:
        return m.group(1) + TABLES[m.group(3)](load(m.group(2))) + m.group(5)
    return MARKED.sub(one, text)


def load(name: str) -> dict:
    """A results file (a path relative to benchmarks/results/); a JSON-lines file's records
    as {"rows": [...]}."""
    path = RESULTS / name
    if path.suffix == ".jsonl":
        return {"rows": [json.loads(line) for line in path.read_text().splitlines() if line]}
    return json.loads(path.read_text())


def pages() -> list[Path]:
    return sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        new = render(text)
        if new != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if not args.check:
                page.write_text(new, encoding="utf-8")
    verb = "differ from their results" if args.check else "rewritten"
    print(f"{', '.join(stale)}: {verb}" if stale else "every table matches its results")
    sys.exit(1 if stale and args.check else 0)


if __name__ == "__main__":
    main()
