"""The time budget: calibrating the device, the rule that chooses the model for a budget, the
plan of steps and its re-plans, and the records of a run's speed. The training loop asks it
questions through `charrnn.budget.pacer.Pacer`."""
