"""charrnn: character-level RNN language models for any text."""

__version__ = "0.1.0"
