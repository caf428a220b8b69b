"""TensorBoard events beside metrics.jsonl, with --tensorboard (the optional extra)."""

from __future__ import annotations

from pathlib import Path

from charrnn.errors import CharrnnError

FIGURES = ("train_loss", "val_loss", "val_bpc", "lr", "chars_per_sec")


def check_installed() -> None:
    """--tensorboard needs the optional extra; say so before anything is trained."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CharrnnError("--tensorboard needs TensorBoard: pip install 'charrnn[tensorboard]' "
                           "(or leave out --tensorboard; metrics.jsonl has every figure)") from None


class Board:
    """The run's events in RUN/tensorboard: each evaluation's figures, and its sample."""

    def __init__(self, folder: Path, step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run's events after its step are the old process's; drop them
        self.writer = SummaryWriter(str(folder), purge_step=step + 1)

    def evaluation(self, record: dict, step: int) -> None:
        for name in FIGURES:
            self.writer.add_scalar(name, record[name], step)

    def sample(self, text: str, step: int) -> None:
        # indented: shown as it is, not as markdown
        self.writer.add_text("sample", "    " + text.replace("\n", "\n    "), step)

    def close(self) -> None:
        self.writer.close()
