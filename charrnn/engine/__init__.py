"""What a training step runs on, below both the training loop and the budget that times it:
the step and its optimizer, the streams of text it reads, the process group of a torchrun job."""
