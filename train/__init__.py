"""Training side: the SoundFlow model (torch), tokenizer, losses, recipes and trainer."""
