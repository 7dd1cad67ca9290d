"""SoundFlow data construction: clip library, TFJP, event selection, streams and targets."""
