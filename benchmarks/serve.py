"""`charrnn serve` under load: 32 streaming clients at once for 30 seconds.

    python benchmarks/serve.py          # about a minute on a 2-core CPU, nothing else running

The real command in a subprocess, serving a 2x128 LSTM (trained for a few steps on tiny
Shakespeare, or a generated text without it), with `--workers 1`, the default (this
script's --workers tries others). First one client alone for 5 s, then 32 clients at once
for 30 s, each asking for 500 characters again and again, streamed.
Measured: every request's outcome (complete, or a 503 with its line; anything else is a
failure), the time to the first character (the 95th percentile, against the single client's),
the server's resident memory each second (the 10th second against the 30th), and a client
that disconnects mid-stream: how soon the server's jobs fall back. Writes
benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results import write_results  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
CLIENTS, SECONDS, LENGTH = 32, 30.0, 500
TARGETS = {"ttfc_p95_ratio": 4.0, "rss_growth": 0.10, "freed_s": 1.0}


def charrnn(*args, **kw):
    return subprocess.run([sys.executable, "-m", "charrnn", *map(str, args)], check=True,
                          capture_output=True, text=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port: int, length: int = LENGTH, seed: int = 0) -> tuple[int, float | None, float]:
    """(status, seconds to the first character, seconds to the end) of one streamed sample."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = json.dumps({"run": "run", "length": length, "seed": seed})
    conn.request("POST", "/api/sample", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    first = None
    if response.status == 200:
        if response.read(1):
            first = time.perf_counter() - start
        response.read()
    else:
        detail = json.loads(response.read()).get("detail", "")
        assert response.status == 503 and "busy" in detail, (response.status, detail)
    conn.close()
    return response.status, first, time.perf_counter() - start


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _ask(port: int, seed: int) -> tuple[int, float | None, float]:
    """One streamed sample over a raw connection, for many at once in one event loop (client
    threads would wait on each other's interpreter lock, and that wait would be counted)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"run": "run", "length": LENGTH, "seed": seed}).encode()
    writer.write(b"POST /api/sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    first = None
    rest = await reader.read(64)  # the first chunk of the body
    if status == 200 and rest:
        first = time.perf_counter() - start
    rest += await reader.read()
    if status != 200:
        assert status == 503 and b"busy" in rest, (status, rest[:200])
    writer.close()
    return status, first, time.perf_counter() - start


def load(port: int, clients: int, seconds: float, pid: int) -> dict:
    results, failures, memory = [], [], []

    async def client(k: int, end: float):
        n = 0
        while time.perf_counter() < end:
            try:
                results.append(await _ask(port, k * 1000 + n))
            except Exception as e:  # (counted: the target is none)
                failures.append(repr(e))
            n += 1

    async def watch(end: float, began: float):
        while time.perf_counter() < end:
            memory.append((round(time.perf_counter() - began, 1), rss_kb(pid)))
            await asyncio.sleep(1.0)

    async def everyone():
        began = time.perf_counter()
        end = began + seconds
        await asyncio.gather(watch(end, began), *(client(k, end) for k in range(clients)))

    asyncio.run(everyone())
    firsts = sorted(f for s, f, _ in results if s == 200 and f is not None)
    return {"clients": clients, "seconds": seconds, "requests": len(results),
            "completed": sum(s == 200 for s, _, _ in results),
            "busy_503": sum(s == 503 for s, _, _ in results), "failures": failures,
            "ttfc_median_s": statistics.median(firsts) if firsts else None,
            "ttfc_p95_s": firsts[int(0.95 * (len(firsts) - 1))] if firsts else None,
            "memory_kb": memory}


def disconnect(port: int, pid: int) -> float:
    """Seconds from a client closing its stream mid-way to the server's work falling back."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/api/sample", json.dumps({"run": "run", "length": 5000}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read(10)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    left = time.perf_counter()
    while time.perf_counter() - left < 10:  # the server's CPU time stops growing
        before = _cpu(pid)
        time.sleep(0.1)
        if _cpu(pid) - before < 2:  # clock ticks in 0.1 s: idle
            return time.perf_counter() - left
    return float("inf")


def _cpu(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                        "serve.json")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = TINYSHAKESPEARE
        if not corpus.exists():
            corpus = folder / "text.txt"
            corpus.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n"
                              * 2000)
        env = {**os.environ, "CHARRNN_CACHE_DIR": str(folder / "cache")}
        charrnn("train", corpus, "--out", folder / "run", "--max-steps", 20, "--layers", 2,
                "--hidden-size", 128, "--threads", 1, env=env)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "charrnn", "serve", folder / "run",
                                   "--port", str(port), "--workers", str(args.workers)],
                                  env=env, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    ask(port, 5)
                    break
                except OSError:
                    time.sleep(0.2)
            single = load(port, 1, 5.0, server.pid)
            print({k: v for k, v in single.items() if k != "memory_kb"}, flush=True)
            many = load(port, CLIENTS, SECONDS, server.pid)
            print({k: v for k, v in many.items() if k != "memory_kb"}, flush=True)
            freed = disconnect(port, server.pid)
            print(f"a client that left: the server idle again after {freed:.2f} s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    tenth = next(kb for t, kb in many["memory_kb"] if t >= 10)
    last = many["memory_kb"][-1][1]
    write_results(args.json, {
        "single": single, "load": many, "freed_s": freed, "targets": TARGETS,
        "ttfc_p95_ratio": many["ttfc_p95_s"] / single["ttfc_p95_s"],
        "rss_10s_kb": tenth, "rss_end_kb": last, "rss_growth": last / tenth - 1})


if __name__ == "__main__":
    main()
