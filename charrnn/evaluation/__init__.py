"""How good a run is, and what it is: its loss beside n-gram baselines, and `info`."""
