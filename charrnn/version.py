"""charrnn's version: in config.json of every run, and in `charrnn --version`."""

__version__ = "0.1.0"
