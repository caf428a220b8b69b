"""Run directories: a self-describing checkpoint that is safe to share and loads anywhere.

    RUN/config.json        format version, model and training settings, vocabulary, corpus,
                           charrnn and torch versions, best validation loss (plain JSON)
    RUN/model.safetensors  weights of the best model by validation loss (what `sample` loads)
    RUN/latest.pt          the latest training state: weights, optimizer, step, data position,
                           hidden state, RNG states; tensors and plain values only, read with
                           torch.load(weights_only=True), so loading never runs code
    RUN/metrics.jsonl      one JSON line per evaluation

Every file is written atomically, so a crash leaves the previous version whole.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

import charrnn
from charrnn.errors import CharrnnError
from charrnn.fileio import atomic_write, atomic_write_bytes, atomic_write_text
from charrnn.model import CharRNN, ModelConfig
from charrnn.vocab import Vocab

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LATEST = "latest.pt"
METRICS = "metrics.jsonl"


def is_run(path: Path) -> bool:
    return (Path(path) / CONFIG).exists()


def write_config(run: Path, config: dict) -> None:
    config = {"format_version": FORMAT_VERSION, "charrnn_version": charrnn.__version__,
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
    if not path.exists():
        raise CharrnnError(f"{run} has no {CONFIG}, so it is not a charrnn run (or its training "
                           "had not finished a first evaluation)")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CharrnnError(f"{path} is corrupted ({e}); train the run again") from None
    if not isinstance(config, dict):
        raise CharrnnError(f"{path} is corrupted (not a JSON object); train the run again")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CharrnnError(f"{path} has checkpoint format version {version!r}, this charrnn "
                           f"reads version {FORMAT_VERSION}; use a matching charrnn")
    return config


def model_config(config: dict, where: Path) -> tuple[ModelConfig, Vocab]:
    """The network settings and vocabulary of a config, checked against each other."""
    try:
        vocab = Vocab(tuple(config["vocab"]))
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


def state_dict_cpu(model: CharRNN) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save_weights(run: Path, model: CharRNN, best_val_loss: float) -> None:
    data = save_safetensors_bytes(state_dict_cpu(model),
                                  metadata={"best_val_loss": repr(best_val_loss)})
    atomic_write_bytes(Path(run) / WEIGHTS, data)


def load_weights_into(model: CharRNN, weights: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise CharrnnError(f"{where} does not match the model in {CONFIG}: "
                           f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in weights.items():
        if tensor.shape != expected[name].shape:
            raise CharrnnError(f"{where} does not match the model in {CONFIG}: {name} has shape "
                               f"{tuple(tensor.shape)}, expected {tuple(expected[name].shape)}")
        if not tensor.is_floating_point():
            raise CharrnnError(f"{where} is corrupted: {name} is not a floating-point tensor")
    model.load_state_dict(weights)


def load(run: Path, device: str | torch.device = "cpu") -> tuple[CharRNN, Vocab, dict]:
    """The best model of a run (eval mode, on `device`), its vocabulary and its config."""
    run = Path(run)
    config = read_config(run)
    mc, vocab = model_config(config, run)
    path = run / WEIGHTS
    if not path.exists():
        raise CharrnnError(f"{run} has no {WEIGHTS}; its training had not finished a first "
                           "evaluation, so there is no model to load yet")
    try:
        weights = load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise CharrnnError(f"{path} is corrupted or truncated ({str(e).splitlines()[0]}); "
                           "train the run again") from None
    model = CharRNN(mc)
    load_weights_into(model, weights, path)
    return model.to(device).eval(), vocab, config


def save_state(run: Path, state: dict) -> None:
    atomic_write(Path(run) / LATEST, lambda tmp: torch.save(state, tmp))


def load_state(run: Path) -> dict:
    """The latest training state, read without ever unpickling arbitrary objects."""
    path = Path(run) / LATEST
    if not path.exists():
        raise CharrnnError(f"{run} has no {LATEST} to resume from; start a new run instead")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, TypeError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CharrnnError(f"{path} is corrupted or not a charrnn training state ({first[:200]});"
                           " it cannot be resumed") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CharrnnError(f"{path} is not a charrnn training state of format {FORMAT_VERSION}; "
                           "it cannot be resumed")
    return state


def append_metrics(run: Path, record: dict) -> None:
    with open(Path(run) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
