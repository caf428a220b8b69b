"""Truncated backpropagation through time, as char-rnn does it.

A split of N ids is cut into `batch_size` contiguous streams of L = (N - 1) // batch_size
characters. Window i of an epoch is columns [i*T, (i+1)*T) of every stream (T = seq_len), with
targets shifted by one character; the hidden state after window i is the start of window i + 1.
On the host, inputs and targets are views on the (memory-mapped) split, and a step copies only
its window; on a GPU the whole split is copied there once when it fits (`Streams.to`), and a
step gathers its window on the device.

In a torchrun job each process holds a contiguous share of the streams (`rows`), cut from the
same streams one process would hold, so the job's batch is one process's batch.
"""

from __future__ import annotations

import numpy as np
import torch

from charrnn.errors import CharrnnError


def fit_batch(n: int, batch_size: int, seq_len: int) -> tuple[int, int, str | None]:
    """Shrink batch and window to fit a split of n ids; return them and a warning, if any."""
    if n < 2:
        raise CharrnnError(f"the training text has {n} character(s); charrnn needs at least 2 "
                           "to learn anything (give a longer corpus)")
    b, t = batch_size, seq_len
    if (n - 1) // b < t:
        b = max(1, (n - 1) // t)
        t = min(t, (n - 1) // b)
    if (b, t) == (batch_size, seq_len):
        return b, t, None
    return b, t, (f"the training text is small ({n:,} characters): using --batch-size {b} and "
                  f"--seq-len {t} instead of {batch_size} and {seq_len}")


def spread(ids: np.ndarray, chars: int, batch_size: int, seq_len: int) -> np.ndarray:
    """About `chars` characters of `ids` for Streams(.., batch_size, seq_len): one piece for
    each stream, from evenly spaced places, so that a few characters estimate the loss of the
    whole text and not of its start (a code base's first files, a book's first chapter). Each
    piece is whole windows and the one character more that its last target needs; laid end to
    end, with one character more that is never read, each piece is one stream. All of `ids`
    when `chars` covers them."""
    if chars >= len(ids):
        return ids
    piece = max(1, (chars // batch_size - 1) // seq_len) * seq_len + 1
    starts = np.linspace(0, len(ids) - piece, batch_size).round().astype(np.int64)
    return np.concatenate([ids[(starts[:, None] + np.arange(piece)).ravel()], ids[-1:]])


class Streams:
    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int,
                 rows: tuple[int, int] | None = None):
        """`batch_size` streams over `ids`, of which this process holds `rows` [start, stop)
        (all of them by default)."""
        start, stop = rows or (0, batch_size)
        self.batch = batch_size  # streams in the whole batch, over all processes
        self.first = start  # the first stream held here
        self.held, self.seq_len = stop - start, seq_len  # streams held by this process
        self.ids = ids
        self.device_data: torch.Tensor | None = None
        self.stream_len = (len(ids) - 1) // batch_size
        L = self.stream_len
        self.inputs = ids[: batch_size * L].reshape(batch_size, L)[start:stop]  # (B, L)
        self.targets = ids[1: batch_size * L + 1].reshape(batch_size, L)[start:stop]  # (B, L)
        self.windows = L // seq_len  # windows per epoch; the ragged tail is left out

    def window(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        cols = slice(i * self.seq_len, (i + 1) * self.seq_len)
        return self.inputs[:, cols], self.targets[:, cols]  # (B, T) each

    def to(self, device: torch.device, keep: bool | None = None,
           max_bytes: int = 1 << 30) -> Streams:
        """On a GPU, keep the whole split there when it fits: then a step reads its window with
        no host-to-device copy and no synchronisation. (`keep` forces the choice.)"""
        B, L = self.inputs.shape
        if keep is None:
            keep = device.type != "cpu" and self.inputs.nbytes <= max_bytes
        self.device_data = None
        if keep:
            ids = self.ids[self.first * L: (self.first + B) * L + 1]
            if ids.dtype != np.uint8:  # torch has no uint16/uint32 arithmetic on every device
                ids = ids.astype(np.int32)
            self.device_data = torch.from_numpy(np.ascontiguousarray(ids)).to(device)
        return self

    def tensors(self, i: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Window i as int64 tensors (B, T) on `device`."""
        data = self.device_data
        if data is not None:
            B, L, T = self.held, self.stream_len, self.seq_len
            starts = torch.arange(B, device=device) * L + i * T  # (B,)
            cols = starts[:, None] + torch.arange(T + 1, device=device)  # (B, T + 1)
            window = data[cols].long()
            return window[:, :-1], window[:, 1:]
        x, y = self.window(i)
        # int64 on the host, then one copy to the device: no per-character work in Python
        x = torch.from_numpy(x.astype(np.int64))
        y = torch.from_numpy(y.astype(np.int64))
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)
