import numpy as np
import pytest

from charrnn.engine.streams import Streams, fit_batch
from charrnn.errors import CharrnnError


def test_streams_are_contiguous_and_cover_the_split():
    ids = np.arange(1001, dtype=np.int64)
    s = Streams(ids, batch_size=4, seq_len=25)
    assert s.stream_len == 250 and s.windows == 10
    xs = np.concatenate([s.window(i)[0] for i in range(s.windows)], axis=1)  # (B, L)
    ys = np.concatenate([s.window(i)[1] for i in range(s.windows)], axis=1)
    for b in range(4):
        assert np.array_equal(xs[b], np.arange(b * 250, (b + 1) * 250))  # one contiguous run
    assert np.array_equal(ys, xs + 1)  # targets are the next character
    assert np.array_equal(np.sort(xs.ravel()), np.arange(1000))  # every input, once


def test_window_continues_where_the_previous_ended():
    s = Streams(np.arange(500), batch_size=2, seq_len=10)
    assert s.window(1)[0][0, 0] == s.window(0)[0][0, -1] + 1


def test_small_text_shrinks_batch_then_window():
    assert fit_batch(10_000, 32, 64)[:2] == (32, 64)
    b, t, warning = fit_batch(1_000, 32, 64)
    assert (b, t) == (15, 64) and "small" in warning
    assert fit_batch(5, 32, 64)[:2] == (1, 4)


def test_text_too_small_to_train_is_an_error():
    with pytest.raises(CharrnnError, match="at least 2"):
        fit_batch(1, 32, 64)


def test_windows_read_on_the_device_equal_windows_read_from_the_host():
    import torch
    ids = (np.arange(5003) * 7 % 251).astype(np.uint8)
    host = Streams(ids, batch_size=6, seq_len=13)
    kept = Streams(ids, batch_size=6, seq_len=13).to(torch.device("cpu"), keep=True)
    assert kept.device_data is not None
    for i in range(host.windows):
        for a, b in zip(host.tensors(i, torch.device("cpu")), kept.tensors(i, torch.device("cpu"))):
            assert a.dtype == b.dtype == torch.int64 and torch.equal(a, b)
