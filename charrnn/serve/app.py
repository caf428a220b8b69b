"""The HTTP server of `charrnn serve`: a JSON API over the runs it was started with, and one page.

    GET  /api/runs              the runs served, each with what `charrnn info` says of it
    POST /api/sample            a sample (or with "beam", the likeliest text), streamed as drawn
    POST /api/complete          the page's Tab: the beam's continuation and a few samples
    POST /api/inspect           a text's cells: one cell's value at every character, or the
                                cells a probe ranks first
    GET  /                      the page; /docs: the API as OpenAPI describes it

Steady under load by construction. Every generation is a job of a `Scheduler`: a few worker
threads advance the jobs a slice of characters at a time, the job with the fewest characters
so far first, so a new request's first characters come before old ones' next, and a client
that leaves stops its job at the next slice. At most `capacity` jobs are taken at once; the
next request gets a 503 with one line, never a queue that grows. Bodies, lengths and texts
are bounded; a job stops at its deadline. Clients name runs, never paths.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from charrnn.api import Run
from charrnn.config import SEED_MAX
from charrnn.errors import CharrnnError
from charrnn.sample import check_prime

MAX_BODY = 64 * 1024  # bytes of a request body
MAX_LENGTH = 5000  # characters of one sample
MAX_PRIME = 20_000  # characters of a prime
MAX_INSPECT = 20_000  # characters of a text to inspect
MAX_BEAM = 16
MAX_CHOICES = 5  # samples offered beside the beam's text on the page
SLICE = 64  # characters a job makes each time a worker takes it (its first time: one)
DEADLINE_S = 60.0  # a job stops this long after it began, done or not
LEVELS = 9  # colour steps the page paints with


# ---------------------------------------------------------------------------------------------
# The requests, bounded where they are declared (a value outside: a 422 naming the field)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run: str = Field(max_length=200, description="A run's name, as GET /api/runs lists it.")


class SampleBody(_Body):
    prime: str = Field("", max_length=MAX_PRIME)
    length: int = Field(500, ge=1, le=MAX_LENGTH)
    temperature: float = Field(0.8, ge=0.0, le=100.0)
    top_k: Optional[int] = Field(None, ge=1)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=0, le=SEED_MAX)
    stop: Optional[str] = Field(None, min_length=1, max_length=200)
    beam: Optional[int] = Field(None, ge=1, le=MAX_BEAM,
                                description="The likeliest text found by a beam this wide.")
    adapt: bool = Field(False, description="Learn from the prime first (sample --adapt).")
    mix: bool = Field(False, description="Mixed with the training text's counts (--mix).")


class CompleteBody(_Body):
    text: str = Field(max_length=MAX_PRIME)
    length: int = Field(60, ge=1, le=400)
    samples: int = Field(3, ge=0, le=MAX_CHOICES)
    beam: int = Field(4, ge=1, le=MAX_BEAM)
    temperature: float = Field(0.8, ge=0.0, le=100.0)
    stop: Optional[str] = Field("\n", max_length=200)


class InspectBody(_Body):
    text: str = Field(min_length=2, max_length=MAX_INSPECT)
    state: Optional[str] = Field(None, max_length=20)
    layer: Optional[int] = Field(None, ge=1)
    cell: Optional[int] = Field(None, ge=0)
    probe: Optional[str] = Field(None, max_length=500,
                                 description="A probe's name or regex:PATTERN: paint its best "
                                 "cell, and list the cells it ranks first.")


class AsciiJSON(JSONResponse):
    """JSON with every character past ASCII escaped: a lone surrogate a client sent (echoed
    in a 422's detail) is then valid JSON, not an encoding error and a 500."""

    def render(self, content) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False,
                          separators=(",", ":")).encode("ascii")


# ---------------------------------------------------------------------------------------------
# The jobs and the workers that advance them


class Busy(Exception):
    """The server holds as many jobs as it takes."""


@dataclass
class Job:
    """A generation: `make()` gives its characters (called in a worker: a prime is fed, or
    learned from, there), made a slice at a time into `out`."""

    make: Callable[[], Iterator[str]]
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    deadline: float
    made: int = 0
    chars: Iterator[str] | None = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def advance(self) -> bool:
        """Make the next slice; False once the job is over (done, stopped or late)."""
        if self.stopped.is_set() or time.monotonic() > self.deadline:
            self._put(None)
            return False
        piece, going = [], True
        try:
            if self.chars is None:
                self.chars = self.make()
            for _ in range(SLICE if self.made else 1):  # (the first character: at once)
                piece.append(next(self.chars))
        except StopIteration:
            going = False
        except CharrnnError as e:
            self._put(e)
            return False
        if piece:
            self.made += len(piece)
            self._put("".join(piece))
        if not going:
            self._put(None)
        return going

    def _put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Scheduler:
    """`workers` threads advancing at most `capacity` jobs, the one with the fewest characters
    made first (ties: the older)."""

    def __init__(self, workers: int, capacity: int):
        self.capacity = capacity
        self.heap: list = []
        self.count = itertools.count()
        self.jobs = 0
        self.lock = threading.Condition()
        self.closed = False
        self.threads = [threading.Thread(target=self._work, daemon=True, name=f"charrnn-{k}")
                        for k in range(workers)]
        for t in self.threads:
            t.start()

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.jobs >= self.capacity:
                raise Busy
            self.jobs += 1
            heapq.heappush(self.heap, (job.made, next(self.count), job))
            self.lock.notify()

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.heap and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                _, _, job = heapq.heappop(self.heap)
            going = job.advance()
            with self.lock:
                if going:
                    heapq.heappush(self.heap, (job.made, next(self.count), job))
                    self.lock.notify()
                else:
                    self.jobs -= 1

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify_all()


# ---------------------------------------------------------------------------------------------
# The application


def create_app(runs: dict[str, Run], workers: int = 1, capacity: int = 64) -> FastAPI:
    """The server of `runs` (name -> Run)."""
    scheduler = Scheduler(workers, capacity)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        scheduler.close()  # (the server ends: its workers with it)

    app = FastAPI(title="charrnn serve", version="1", lifespan=lifespan,
                  default_response_class=AsciiJSON,
                  description="Character-level RNN models: sample, complete, inspect.")
    app.state.scheduler = scheduler
    page = resources.files("charrnn.serve") / "page"

    @app.middleware("http")
    async def bounded_bodies(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
            return AsciiJSON({"detail": f"a request body holds at most {MAX_BODY:,} bytes"},
                             status_code=413)
        if request.method == "POST" and size is None:
            return AsciiJSON({"detail": "give the body's Content-Length"}, status_code=411)
        return await call_next(request)

    @app.exception_handler(CharrnnError)
    async def said(request: Request, e: CharrnnError):
        return AsciiJSON({"detail": str(e)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return AsciiJSON({"detail": jsonable_encoder(e.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def refused(request: Request, e: HTTPException):
        return AsciiJSON({"detail": e.detail}, status_code=e.status_code, headers=e.headers)

    def run_of(name: str) -> Run:
        if name not in runs:
            raise HTTPException(404, f"no run {name!r} is served here; the runs are "
                                     f"{', '.join(sorted(runs))} (GET /api/runs)")
        return runs[name]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return (page / "index.html").read_text(encoding="utf-8")

    @app.get("/page/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        kinds = {"page.js": "text/javascript", "page.css": "text/css"}
        if name not in kinds:  # the page's own files only, by name: never a path
            raise HTTPException(404, "no such file")
        return Response((page / name).read_text(encoding="utf-8"), media_type=kinds[name])

    @app.get("/api/runs")
    def list_runs() -> dict:
        return {"runs": [describe(name, run) for name, run in sorted(runs.items())]}

    @app.post("/api/sample", response_class=StreamingResponse,
              responses={200: {"content": {"text/plain": {}}}})
    async def sample(body: SampleBody, request: Request):
        run = run_of(body.run)
        if body.beam is not None and (body.top_k is not None or body.top_p is not None):
            raise CharrnnError("beam finds the likeliest text; top_k and top_p are for "
                               "drawing samples and do not go with it")
        check_prime(body.prime, run.vocab, drop_unknown=False)  # (a 400 before any text)
        if body.adapt and not body.prime:
            raise CharrnnError("adapt learns from the prime, and there is none; give a prime")
        job = _job(scheduler, lambda: run.characters(
            body.length, prime=body.prime, temperature=body.temperature, top_k=body.top_k,
            top_p=body.top_p, seed=body.seed, stop=body.stop, adapt=body.adapt, mix=body.mix,
            beam=body.beam))
        return StreamingResponse(streamed(job), media_type="text/plain; charset=utf-8")

    @app.post("/api/complete")
    async def complete(body: CompleteBody) -> dict:
        run = run_of(body.run)
        text, stop = body.text, body.stop or None
        check_prime(text, run.vocab, drop_unknown=False)
        makers = [lambda: run.characters(body.length, prime=text, stop=stop, beam=body.beam)]
        makers += [lambda k=k: run.characters(body.length, prime=text, stop=stop, seed=k,
                                              temperature=body.temperature)
                   for k in range(body.samples)]
        jobs: list[Job] = []
        try:
            for make in makers:
                jobs.append(_job(scheduler, make))
        except HTTPException:  # (full: the ones taken stop, and free their slots)
            for job in jobs:
                job.stopped.set()
            raise
        made = [await collected(job) for job in jobs]
        return {"beam": made[0], "samples": made[1:]}

    @app.post("/api/inspect")
    def inspect(body: InspectBody) -> dict:
        return painted(run_of(body.run), body)

    return app


def describe(name: str, run: Run) -> dict:
    """What GET /api/runs says of a run: plain values only."""
    m = run.model.config
    info = run.config
    return {"name": name, "model": m.to_dict(), "vocab_size": len(run.vocab),
            "step": info.get("step"), "best_val_loss": info.get("best_val_loss"),
            "corpus": (info.get("corpus") or {}).get("name")}


async def streamed(job: Job):
    """A job's characters as they are made; the job stops when the client leaves."""
    try:
        while True:
            item = await job.out.get()
            if item is None:
                return
            if isinstance(item, CharrnnError):
                yield f"\n[charrnn: {item}]"
                return
            yield item
    finally:
        job.stopped.set()  # (a client gone: its job stops at its next slice)


async def collected(job: Job) -> str:
    pieces = []
    try:
        while (item := await job.out.get()) is not None:
            if isinstance(item, CharrnnError):
                raise item
            pieces.append(item)
    finally:
        job.stopped.set()
    return "".join(pieces)


def _job(scheduler: Scheduler, make: Callable[[], Iterator[str]]) -> Job:
    job = Job(make, asyncio.get_running_loop(), asyncio.Queue(), time.monotonic() + DEADLINE_S)
    try:
        scheduler.submit(job)
    except Busy:
        raise HTTPException(503, f"the server is busy ({scheduler.capacity} requests at once); "
                                 "try again in a moment", headers={"Retry-After": "1"}) from None
    return job


def painted(run: Run, body: InspectBody) -> dict:
    """One cell's value at every character of the text (the probe's best cell, with a probe),
    in LEVELS steps of its state's range, as inspect-cells --html paints it."""
    from charrnn.interp.inspection import default_state, value_range

    ins = run.inspect(body.text)
    state = body.state or default_state(ins.model)
    ins.check(state, body.layer)
    cells = []
    layer, cell = body.layer or ins.layers, body.cell or 0
    if body.probe:
        ranked = ins.probe(body.probe, state, top=10)["cells"]
        cells = [[int(k), int(c), float(r)] for k, c, r in ranked]
        if cells and body.cell is None:
            layer, cell = cells[0][0], cells[0][1]
    if cell >= ins.hidden_size:
        raise CharrnnError(f"cell {cell} does not exist: cells are numbered 0 to "
                           f"{ins.hidden_size - 1}")
    values = ins.states[state][layer - 1][:, cell].astype(np.float64)
    lo, hi = value_range(state)
    steps = np.clip(np.round((np.clip(values, lo, hi) - lo) / (hi - lo) * (LEVELS - 1)), 0,
                    LEVELS - 1)
    return {"text": body.text, "state": state, "layer": int(layer), "cell": int(cell),
            "values": [v if math.isfinite(v) else None for v in values.tolist()],
            "levels": steps.astype(int).tolist(), "range": [lo, hi], "cells": cells}


def load_runs(paths: list[Path]) -> dict[str, Run]:
    """The runs to serve, by name: each folder's name (a second of the same name gets -2)."""
    from charrnn import api

    runs: dict[str, Run] = {}
    for path in paths:
        name, k = Path(path).resolve().name or "run", 2
        while name in runs:
            name = f"{Path(path).resolve().name}-{k}"
            k += 1
        runs[name] = api.load(path)
    return runs
