"""How a training run is kept: checkpoints, resume, budgets, the safety cap, logs, plateau restarts, DDP."""
