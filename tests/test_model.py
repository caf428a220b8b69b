import pytest
import reference
import torch

from charrnn.config import ModelConfig
from charrnn.errors import CharrnnError
from charrnn.model import GATES, CharRNN


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_per_step_reference_reproduces_the_fused_path(kind, layers):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, model=kind, layers=layers, hidden_size=24,
                                embedding_size=8, dropout=0.3)).eval()
    x = torch.randint(11, (3, 17))
    state = tuple(torch.randn_like(s) for s in model.init_state(3))
    with torch.no_grad():
        fused, fused_state = model(x, state)
        stepped, stepped_state, trace = reference.trace(model, x, state)
    assert torch.allclose(fused, stepped, atol=1e-5)
    for a, b in zip(fused_state, stepped_state):
        assert torch.allclose(a, b, atol=1e-5)
    assert set(trace) == {"h", *(["c"] if kind == "lstm" else []), *GATES[kind]}
    for value in trace.values():
        assert value.shape == (layers, 3, 17, 24)
    assert torch.allclose(trace["h"][:, :, -1], fused_state[0], atol=1e-5)
    for gate in GATES[kind]:
        lo, hi = (-1, 1) if gate in ("candidate", "new") else (0, 1)
        assert trace[gate].min() >= lo and trace[gate].max() <= hi


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_the_layer_at_a_time_trace_equals_the_per_step_reference(kind, layers):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=11, model=kind, layers=layers, hidden_size=24,
                                embedding_size=8)).eval()
    x = torch.randint(11, (2, 40))
    state = tuple(torch.randn_like(s) for s in model.init_state(2))
    with torch.no_grad():
        slow = reference.trace(model, x, state)
        fast = model.trace(x, state)
    assert torch.allclose(slow[0], fast[0], atol=1e-5)
    for a, b in zip(slow[1], fast[1]):
        assert torch.allclose(a, b, atol=1e-5)
    assert slow[2].keys() == fast[2].keys()
    for name in slow[2]:
        assert torch.allclose(slow[2][name], fast[2][name], atol=1e-5), name


def test_trace_of_a_long_text_is_one_pass_continuing_the_state():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=5, hidden_size=8, embedding_size=4)).eval()
    x = torch.randint(5, (1, 30))
    with torch.no_grad():
        whole, _, _ = model.trace(x)
        _, mid, _ = model.trace(x[:, :12])
        rest, _, _ = model.trace(x[:, 12:], mid)
    assert torch.allclose(whole[:, 12:], rest, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    (dict(model="transformer"), "unknown --model"),
    (dict(hidden_size=0), "hidden-size"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_model_settings_are_clear_errors(bad, message):
    with pytest.raises(CharrnnError, match=message):
        ModelConfig(vocab_size=4, **bad)


@pytest.mark.parametrize("T", [1, 2, 7, 100, 1001])
def test_the_blocked_scan_is_the_recurrence_step_by_step(T):
    """The LSTM cell state of a long text comes from a scan in blocks (about 2 sqrt(T) steps
    of Python, not T): the same values as the plain loop, a's of 0 (a saturated forget gate)
    included."""
    from charrnn.model import linear_scan

    torch.manual_seed(T)
    a, b, start = torch.rand(2, T, 5), torch.randn(2, T, 5), torch.randn(2, 5)
    a[:, ::3, 0] = 0.0
    x, expected = start, []
    for t in range(T):
        x = a[:, t] * x + b[:, t]
        expected.append(x)
    assert torch.allclose(linear_scan(a, b, start), torch.stack(expected, 1), atol=1e-5)
