"""The validation loss: the model over the validation streams, in evaluation mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charrnn.engine.distributed import World
from charrnn.engine.streams import Streams
from charrnn.model import CharRNN


@torch.no_grad()
def validation_loss(model: CharRNN, streams: Streams, device: torch.device, world: World,
                    autocast) -> float:
    """The mean loss over `streams` (in a torchrun job, each rank's streams summed over all),
    with `autocast()` as training runs it; the model is left in training mode."""
    model.eval()
    hidden = model.init_state(streams.held, device)
    total = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(streams.windows if streams.held else 0):
        x, y = streams.tensors(i, device)
        with autocast():
            logits, hidden = model(x, hidden)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    model.train()
    return world.sum(total).item() / (streams.windows * streams.batch * streams.seq_len)
