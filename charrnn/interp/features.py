"""Features no single cell shows: a sparse autoencoder (a sparse dictionary) over one layer's
states. Each state vector is written as a sparse, non-negative mix of learned directions; a
direction that fires on a kind of context is a feature, whether one cell carries it or many.

The recipe is the usual one for interpretability work: x ~ W_d relu(W_e (x - b_d) + b_e) + b_d,
the decoder's columns kept at unit length, an L1 penalty on the codes, Adam, and every so often
the features that have stopped firing are re-aimed at the worst-reconstructed states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from charrnn.errors import CharrnnError
from charrnn.fileio import atomic_write, atomic_write_text, check_regular

EXPANSION = 4  # features per dimension of the state
MAX_FEATURES_PER_CELL = 64  # `features --features` takes at most this many per cell
L1 = 3e-3  # sparsity: the weight of the codes' L1 norm against the reconstruction error
STEPS = 3000
BATCH = 512
LR = 3e-3


@dataclass
class Dictionary:
    w_enc: torch.Tensor  # (F, H)
    b_enc: torch.Tensor  # (F,)
    w_dec: torch.Tensor  # (H, F), unit columns
    b_dec: torch.Tensor  # (H,)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The features' activations for states x (N, H): (N, F), mostly zero."""
        with torch.no_grad():
            t = torch.as_tensor(x, dtype=torch.float32)
            return torch.relu((t - self.b_dec) @ self.w_enc.T + self.b_enc).numpy()


def train_dictionary(x: np.ndarray, features: int | None = None, steps: int = STEPS, l1: float = L1,
          seed: int = 0, log=None) -> Dictionary:
    """Learn a sparse dictionary of `features` directions (EXPANSION x H by default) for the
    states x (N, H), scaled so their mean squared norm is H (one sparsity setting fits all)."""
    torch.manual_seed(seed)
    x = torch.as_tensor(x, dtype=torch.float32)
    n, h = x.shape
    f = features or EXPANSION * h
    scale = float(np.sqrt(h / max(float((x ** 2).sum(1).mean()), 1e-12)))
    xs = x * scale
    b_dec = xs.median(dim=0).values.clone().requires_grad_(True)
    w_dec = torch.nn.functional.normalize(torch.randn(h, f), dim=0).requires_grad_(True)
    w_enc = w_dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(f, requires_grad=True)
    opt = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=LR)
    fired = torch.zeros(f)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        batch = xs[torch.randint(n, (min(BATCH, n),), generator=g)]
        codes = torch.relu((batch - b_dec) @ w_enc.T + b_enc)
        recon = codes @ w_dec.T + b_dec
        loss = ((recon - batch) ** 2).sum(1).mean() / h + l1 * codes.abs().sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            w_dec.div_(w_dec.norm(dim=0, keepdim=True).clamp_min(1e-8))
            fired += (codes > 0).sum(0)
            if step % 500 == 499 and step < steps * 0.8:  # re-aim the features that died
                dead = torch.nonzero(fired == 0).flatten()
                if len(dead):
                    errors = ((recon - batch) ** 2).sum(1)
                    worst = batch[torch.argsort(errors, descending=True)[: len(dead)]] - b_dec
                    aim = torch.nn.functional.normalize(worst, dim=1)
                    w_dec[:, dead[: len(aim)]] = aim.T
                    w_enc[dead[: len(aim)]] = aim * 0.2
                    b_enc[dead[: len(aim)]] = 0.0
                fired.zero_()
        if log is not None and step % 1000 == 0:
            log(f"step {step}: loss {loss.item():.4f}")
    with torch.no_grad():  # fold the scale back in: the dictionary reads raw states
        return Dictionary(w_enc.detach() * scale, b_enc.detach().clone(), w_dec.detach().clone(),
                          b_dec.detach() / scale)


def inventory(acts: np.ndarray, text: str, lang: str) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """(how often each feature fires, and its label: the probe it follows best, with r)."""
    from charrnn.interp import probes

    frequency = (acts > 0).mean(axis=0)
    names = list(probes.PROBES)
    table = np.stack([probes.PROBES[n].feature(text, lang) for n in names], axis=1)
    r = np.stack([probes.correlations(table.astype(np.float64), acts[:, f])
                  for f in range(acts.shape[1])])  # (F, probes)
    best = np.abs(r).argmax(axis=1)
    return frequency, [(names[b], float(r[f, b])) for f, b in enumerate(best)]


@dataclass
class Learned:
    path: Path  # where the dictionary was saved
    text: str  # what it was learned on
    acts: np.ndarray  # (N, F): the features' activations on it
    frequency: np.ndarray  # (F,): how often each fires
    labels: list[tuple[str, float]]  # each one's best probe, and r


def learn(run: Path, model, vocab, config: dict, layer: int, state: str, chars: int,
          count: int | None, steps: int, say) -> Learned:
    """Learn, label and save the dictionary of a layer's `state` over the first `chars`
    characters of the run's training text."""
    from charrnn.config import InspectConfig
    from charrnn.interp import probes
    from charrnn.interp.inspection import check_memory, inspect, run_corpus

    hidden, layers = model.config.hidden_size, model.config.layers
    if count is not None and not 1 <= count <= MAX_FEATURES_PER_CELL * hidden:
        raise CharrnnError(f"--features must be a whole number from 1 to "
                           f"{MAX_FEATURES_PER_CELL * hidden:,} ({MAX_FEATURES_PER_CELL} per "
                           f"cell), not {count}")
    if not 1 <= layer <= layers:
        raise CharrnnError(f"--layer {layer} does not exist: the model has layers 1 to {layers}")
    corpus = run_corpus(config)
    train, _ = corpus.split(config.get("train", {}))
    text = corpus.vocab.decode(train[:chars])
    check_memory(model.config, len(text), InspectConfig.max_memory)
    ins = inspect(model, vocab, text)
    ins.check(state, layer)
    x = ins.states[state][layer - 1]
    say(f"learning {count or EXPANSION * x.shape[1]} features of layer {layer} ({state}) on "
        f"{len(text):,} characters")
    d = train_dictionary(x, count, steps)
    acts = d.encode(x)
    lang = probes.detect(text)
    frequency, labels = inventory(acts, text, lang)
    path = path_of(run, layer, state)
    meta = {"layer": layer, "state": state, "characters": len(text), "language": lang}
    save(d, path, meta)
    summary(path, {**meta, "frequency": frequency.tolist(),
                   "labels": [{"probe": n, "r": r} for n, r in labels]})
    return Learned(path, text, acts, frequency, labels)


def path_of(run: Path, layer: int, state: str) -> Path:
    return Path(run) / f"features-l{layer}-{state}.safetensors"


def save(d: Dictionary, path: Path, meta: dict) -> None:
    tensors = {"w_enc": d.w_enc.contiguous(), "b_enc": d.b_enc, "w_dec": d.w_dec.contiguous(),
               "b_dec": d.b_dec}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp),
                                             metadata={"meta": json.dumps(meta)}))


def load(path: Path, hidden: int) -> Dictionary:
    """A saved dictionary, its shapes checked against the model's layer."""
    if not path.exists() and not path.is_symlink():
        raise CharrnnError(f"{path} does not exist; learn the features first with `charrnn "
                           "features RUN`")
    check_regular(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            features = shapes.get("w_enc", (0,))[0]
            expected = {"w_enc": (features, hidden), "b_enc": (features,),
                        "w_dec": (hidden, features), "b_dec": (hidden,)}
            if shapes != expected or not 1 <= features <= MAX_FEATURES_PER_CELL * hidden:
                raise CharrnnError(f"{path} does not fit this model's layer of {hidden} cells; "
                                   "learn the features again")
            t = {k: f.get_tensor(k) for k in expected}
        d = Dictionary(t["w_enc"].float(), t["b_enc"].float(), t["w_dec"].float(),
                       t["b_dec"].float())
        if not all(bool(torch.isfinite(v).all()) for v in t.values()):
            raise ValueError("it holds NaN or infinite values")
    except CharrnnError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes is corruption
        raise CharrnnError(f"{path} is corrupted ({str(e)[:120]}); learn the features again") \
            from None
    f = d.w_enc.shape[0]
    if d.w_enc.shape != (f, hidden) or d.w_dec.shape != (hidden, f) or d.b_enc.shape != (f,) \
            or d.b_dec.shape != (hidden,):
        raise CharrnnError(f"{path} does not fit this model's layer of {hidden} cells; learn the "
                           "features again")
    return d


def summary(path: Path, meta: dict) -> None:
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
