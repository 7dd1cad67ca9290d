"""Model kinds, one folder each: what a kind trains (its model, batches, loss terms, recipes)
on the one trainer (train/trainer.py)."""
