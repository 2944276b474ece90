"""One run, from the data laid out to the optimizer step: layout.py (the data for a run), nets.py (the
networks), optim.py (optimizers, schedule), step.py (the training step), engines.py (how steps run, and model
creation), trainer.py (one timed run), runner.py (recipes run warm, side by side), device.py, and the
`fastmnist train` command (train.py)."""
