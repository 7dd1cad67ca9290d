"""The decoder-only kind: the SoundFlow model (streaming encoder, adapter, decoder), the
sequence protocol for a batch, its recipes, pretrained audio-LLM towers and trainer Kind."""
