"""Training a run: its set-up, the choice of model for a budget, the loop, and torchrun."""
