from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TINYSHAKESPEARE = SHARED / "corpora" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch):
    """Every test encodes into its own cache, and keeps corpora in its own data folder, never
    the user's."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CHARRNN_CACHE_DIR", str(path))
    monkeypatch.setenv("CHARRNN_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    return path


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tests run on one thread, as --threads 1 does: the exact comparisons (a resumed run
    against an uninterrupted one) then cannot see the thread count move with the machine's load
    (tests/test_threads.py tests that policy itself)."""
    monkeypatch.setenv("CHARRNN_THREADS", "1")


class PlannedClock:
    """A clock for the training loop (Trainer.clock) on which each step and each evaluation
    takes exactly what the run's plan says, or `slower` times that: the loop then runs as its
    plan foresaw, on any machine, however loaded."""

    def __init__(self, slower: float = 1.0):
        self.t, self.slower, self.seen = 1000.0, slower, None

    def __get__(self, trainer, owner):
        return lambda: self.tick(trainer)

    def tick(self, trainer) -> float:
        plan, s = trainer.plan, trainer.train_streams
        per_step = s.batch * s.seq_len / plan.chars_per_sec if plan else 1e-3
        per_eval = plan.eval_chars / plan.eval_chars_per_sec if plan else 1e-3
        now = (trainer.step, trainer.evaluations)
        if self.seen is not None:
            self.t += self.slower * ((now[0] - self.seen[0]) * per_step +
                                     (now[1] - self.seen[1]) * per_eval)
        self.seen = now
        return self.t


@pytest.fixture
def write(tmp_path):
    def write(name: str, text: str | bytes) -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path
    return write


def invoke(*args, catch_exceptions: bool = False):
    """Run the command line in this process, as a user types it; the result has the exit code,
    stdout and stderr (and, with `catch_exceptions`, any exception instead of raising it)."""
    from typer.testing import CliRunner

    from charrnn.cli import app
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=catch_exceptions)


def quiet():
    from rich.console import Console

    from charrnn.training.progress import Reporter
    return Reporter(Console(stderr=True, quiet=True))


def train_run(corpus_path, run, model=None, resume=False, callback=None, **train):
    """Train through the library with quiet output; return (trainer, outcome)."""
    from charrnn.config import TrainConfig
    from charrnn.training import prepare

    if resume:
        trainer = prepare.resume(run, str(corpus_path) if corpus_path else None, train, quiet())
    else:
        cfg = TrainConfig(**{"device": "cpu", "eval_every": 10**6, "warmup_steps": 0, **train})
        model_cfg = {"hidden_size": 32, "layers": 1, "embedding_size": 16, "dropout": 0.1,
                     **(model or {})}
        model_cfg = {k: v for k, v in model_cfg.items() if v is not None}  # None: choose it
        trainer = prepare.new(str(corpus_path), run, cfg, model_cfg, reporter=quiet())
    return trainer, trainer.run_loop(on_step=callback)


def four_step_run(folder: Path, text: str, name: str = "corpus.txt", **model) -> Path:
    """A run of a tiny model trained for four steps on `text`, in `folder`/run: what the
    tests of a run's files and commands start from."""
    corpus = folder / name
    corpus.write_text(text)
    train_run(corpus, folder / "run", max_steps=4, eval_every=2,
              model={"hidden_size": 16, "embedding_size": 8, **model})
    return folder / "run"


def edit_config(run: Path, change) -> None:
    """Rewrite a run's config.json by `change(config)`, as a stranger might."""
    import json

    path = run / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
