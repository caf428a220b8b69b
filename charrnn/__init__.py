"""charrnn: character-level RNN language models for any text.

    import charrnn
    run = charrnn.train("corpus.txt", time="2m")
    print(run.sample(500))

The Python API is charrnn/api.py (train, load, Run; mistakes raised as CharrnnError); the
command line (charrnn/cli/) is built on it. They are read when first used, so `charrnn --help`
starts without loading PyTorch.
"""

from charrnn.version import __version__

__all__ = ["CharrnnError", "Run", "__version__", "load", "train"]


def __getattr__(name: str):
    if name == "CharrnnError":
        from charrnn.errors import CharrnnError

        return CharrnnError
    if name in __all__:
        from charrnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
