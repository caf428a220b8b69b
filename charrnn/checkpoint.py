"""Run directories: a self-describing checkpoint that is safe to share and loads anywhere.

    RUN/config.json        format version, model and training settings, vocabulary, corpus,
                           charrnn and torch versions, best validation loss (plain JSON)
    RUN/model.safetensors  weights of the best model by validation loss (what `sample` loads)
    RUN/latest.pt          the latest training state: weights, optimizer, step, data position,
                           hidden state, RNG states; tensors and plain values only, read with
                           torch.load(weights_only=True), so loading never runs code
    RUN/metrics.jsonl      one JSON line per evaluation
    RUN/samples.txt        a short sample of the model at each evaluation, headed by its step

Every file is written atomically, so a crash leaves the previous version whole.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors_bytes

from charrnn.config import ModelConfig
from charrnn.errors import CharrnnError, describe_os_error, first_line
from charrnn.fileio import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    check_regular,
    loads_json,
    open_regular,
    read_regular,
)
from charrnn.model import CharRNN, blocks
from charrnn.version import __version__
from charrnn.vocab import Vocab

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LATEST = "latest.pt"
METRICS = "metrics.jsonl"
SAMPLES = "samples.txt"
BOARD = "tensorboard"  # a folder of TensorBoard events, with --tensorboard
RUN_FILES = (CONFIG, WEIGHTS, LATEST, METRICS, SAMPLES)
LOCK = ".lock"  # the run lock's file (see RunLock); it holds nothing
MAX_CONFIG_BYTES = 64 << 20  # a vocabulary of every Unicode character fits many times over




def is_run(path: Path) -> bool:
    """Whether `path` holds a charrnn run: a config.json of charrnn's, not only a file of that
    name (another program's, or a link)."""
    try:
        read_config(path)
    except CharrnnError:
        return False
    return True


def write_config(run: Path, config: dict) -> None:
    config = {"format_version": FORMAT_VERSION, "charrnn_version": __version__,
              "torch_version": torch.__version__, **config}
    atomic_write_text(Path(run) / CONFIG, json.dumps(config, indent=2) + "\n")


def read_config(run: Path) -> dict:
    run = Path(run)
    if not run.exists():
        raise CharrnnError(f"run {run} does not exist; train one with `charrnn train CORPUS`")
    if not run.is_dir():
        raise CharrnnError(f"{run} is a file, not a run directory; give the folder "
                           "`charrnn train` wrote (runs/NAME)")
    path = run / CONFIG
    if not path.exists() and not path.is_symlink():
        raise CharrnnError(f"{run} has no {CONFIG}, so it is not a charrnn run directory")
    try:
        config = loads_json(read_regular(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except OSError as e:
        raise CharrnnError(describe_os_error(e, "read")) from None
    except ValueError as e:
        first = first_line(e)
        raise CharrnnError(f"{path} is corrupted ({first}); train the run again") from None
    return check_config(config, path)


def check_config(config, path: Path) -> dict:
    """A parsed config.json's format and parts, checked (also on a torchrun job's other ranks,
    which receive rank 0's copy)."""
    if not isinstance(config, dict):
        raise CharrnnError(f"{path} is corrupted (not a JSON object); train the run again")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CharrnnError(f"{path} has checkpoint format version {version!r}, this charrnn "
                           f"reads version {FORMAT_VERSION}; use a matching charrnn")
    for key, kind in (("model", dict), ("train", dict), ("vocab", list), ("corpus", dict)):
        if not isinstance(config.get(key), kind):
            raise CharrnnError(f"{path} is corrupted (\"{key}\" is missing or not a JSON "
                               f"{'object' if kind is dict else 'list'}); train the run again")
    return config


def model_config(config: dict, where: Path) -> tuple[ModelConfig, Vocab]:
    """The network settings and vocabulary of a config, checked against each other."""
    try:
        vocab = Vocab(tuple(config["vocab"]))
    except (TypeError, ValueError):
        raise CharrnnError(f"{where / CONFIG} is invalid: its vocabulary is not a sorted list of "
                           "distinct characters; train the run again") from None
    try:
        model = ModelConfig(**config["model"])
    except CharrnnError as e:
        raise CharrnnError(f"{where / CONFIG} is invalid: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CharrnnError(f"{where / CONFIG} is corrupted (bad or missing {e}); "
                           "train the run again") from None
    if model.vocab_size != len(vocab):
        raise CharrnnError(f"{where / CONFIG} is inconsistent: {len(vocab)} characters in the "
                           f"vocabulary but the model has {model.vocab_size}")
    return model, vocab


def expected_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a model of this config has, worked out without building it."""
    gates = blocks(c.model) * c.hidden_size
    shapes = {"embed.weight": (c.vocab_size, c.embedding_size),
              "head.weight": (c.vocab_size, c.hidden_size), "head.bias": (c.vocab_size,)}
    for k in range(c.layers):
        shapes[f"rnn.weight_ih_l{k}"] = (gates, c.embedding_size if k == 0 else c.hidden_size)
        shapes[f"rnn.weight_hh_l{k}"] = (gates, c.hidden_size)
        shapes[f"rnn.bias_ih_l{k}"] = (gates,)
        shapes[f"rnn.bias_hh_l{k}"] = (gates,)
    return shapes


def parameter_count(c: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in expected_shapes(c).values())


def check_shapes(found: dict[str, tuple[int, ...]], config: ModelConfig, where: Path) -> None:
    expected = expected_shapes(config)
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        raise CharrnnError(f"{where} does not match the model in {CONFIG}: "
                           f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, shape in expected.items():
        if tuple(found[name]) != shape:
            raise CharrnnError(f"{where} does not match the model in {CONFIG}: {name} has shape "
                               f"{tuple(found[name])}, expected {shape}")


def state_dict_cpu(model: CharRNN) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(run: Path, model: CharRNN, best_val_loss: float) -> None:
    data = save_safetensors_bytes(state_dict_cpu(model),
                                  metadata={"best_val_loss": repr(best_val_loss)})
    atomic_write_bytes(Path(run) / WEIGHTS, data)


def load_weights_into(model: CharRNN, weights: dict[str, torch.Tensor], where: Path) -> None:
    check_shapes({k: tuple(v.shape) for k, v in weights.items()}, model.config, where)
    for name, tensor in weights.items():
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise CharrnnError(f"{where} is corrupted: {name} is not a floating-point tensor")
        if not torch.isfinite(tensor).all():
            raise CharrnnError(f"{where} is corrupted: {name} holds NaN or infinite values")
    model.load_state_dict({k: v.float() for k, v in weights.items()})


def read_weights(path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, shapes checked against the config before any is read."""
    check_regular(path, 8 * parameter_count(config) + MAX_CONFIG_BYTES)
    try:
        with safe_open(path, framework="pt") as f:
            check_shapes({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, config,
                         path)
            return {k: f.get_tensor(k) for k in f.keys()}
    except CharrnnError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes is corruption
        first = first_line(e)
        raise CharrnnError(f"{path} is corrupted or truncated ({first}); "
                           "train the run again") from None


def load(run: Path, device: str | torch.device = "cpu") -> tuple[CharRNN, Vocab, dict]:
    """The best model of a run (eval mode, on `device`), its vocabulary and its config."""
    run = Path(run)
    config = read_config(run)
    mc, vocab = model_config(config, run)
    path = run / WEIGHTS
    if not path.exists():
        raise CharrnnError(f"{run} has no {WEIGHTS}; its training had not finished a first "
                           "evaluation, so there is no model to load yet")
    weights = read_weights(path, mc)
    model = CharRNN(mc)
    load_weights_into(model, weights, path)
    return model.to(device).eval(), vocab, config


def save_state(run: Path, state: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: a full disk is an OSError, not a C++ assert
            try:
                torch.save(state, f)
            except RuntimeError as e:
                # torch's writer, closing after a failed write, asserts about its position:
                # the write's own OSError underneath is what happened
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise
    atomic_write(Path(run) / LATEST, write)


STATE_KEYS = {"format_version", "model", "optimizer", "step", "epoch", "window", "elapsed",
              "schedule", "since_eval", "hidden", "scaler", "rng",
              "world_size", "rank_rng",  # (from a torchrun job, see train.py)
              "threads", "pacing"}


def state_limit(c: ModelConfig, batch_size: int, eval_every: int | None) -> int:
    """The most bytes a training state of this model can hold: the weights, the optimizer's
    two moments and a gradient-sized margin, the hidden state, the losses since the last
    evaluation, and room for the small parts."""
    hidden = 2 * c.layers * batch_size * c.hidden_size
    return 4 * (4 * parameter_count(c) + hidden) + 8 * (eval_every or 0) + (16 << 20)


def check_state_file(path: Path, limit: int, data: bytes | None = None) -> None:
    """Look at latest.pt's zip directory (or `data`, its bytes) before torch reads any of it: a
    stranger's file may claim more than this run can hold, or inflate a few bytes into
    gigabytes."""
    try:
        with (open_regular(path, 2 * limit) if data is None else io.BytesIO(data)) as f, \
                zipfile.ZipFile(f) as z:
            entries = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CharrnnError(f"{path} is corrupted or not a charrnn training state ({e}); "
                           "it cannot be resumed") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise CharrnnError(f"{path} holds compressed entries, which torch never writes; it is "
                           "not a charrnn training state and cannot be resumed")
    total = sum(e.file_size for e in entries)
    if total > limit:
        raise CharrnnError(f"{path} holds {total:,} bytes, more than a training state of the "
                           f"model in {CONFIG} can ({limit:,}); it cannot be resumed")


def _latest(run: Path) -> Path:
    path = Path(run) / LATEST
    if not path.exists() and not path.is_symlink():
        raise CharrnnError(f"{run} has no {LATEST} to resume from; start a new run instead")
    return path


def read_state_bytes(run: Path, limit: int) -> bytes:
    """latest.pt's bytes, its size checked: what a torchrun job's rank 0 sends the others."""
    path = _latest(run)
    check_state_file(path, limit)
    try:
        return read_regular(path, 2 * limit)
    except OSError as e:
        raise CharrnnError(describe_os_error(e, "read")) from None


def load_state(run: Path, limit: int | None = None, data: bytes | None = None) -> dict:
    """The latest training state (from `data`, its bytes, when given), read without ever
    unpickling arbitrary objects; with `limit`, its size is checked first (see state_limit)."""
    path = _latest(run) if data is None else Path(run) / LATEST
    if limit is not None:
        check_state_file(path, limit, data)
    try:
        with open_regular(path) if data is None else io.BytesIO(data) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, TypeError, KeyError, IndexError) as e:
        first = first_line(e).split(". ")[0][:120]
        raise CharrnnError(f"{path} is corrupted or not a charrnn training state ({first}); "
                           "it cannot be resumed") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CharrnnError(f"{path} is not a charrnn training state of format {FORMAT_VERSION}; "
                           "it cannot be resumed")
    unknown = sorted(str(k)[:40] for k in set(state) - STATE_KEYS)
    if unknown:
        raise CharrnnError(f"{path} holds keys a charrnn training state never has "
                           f"({', '.join(unknown[:3])}); it cannot be resumed")
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in weights.values()):
        raise CharrnnError(f"{path} has no model weights; it cannot be resumed")
    return state
