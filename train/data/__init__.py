"""SoundFlow data construction: clip library, TFJP preprocessing, scenario planning, stream
rendering with per-chunk targets, and sharded, deterministic, resumable builds (README.md).
"""
