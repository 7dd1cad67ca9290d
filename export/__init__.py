"""Checkpoint -> bundle: ONNX graphs with explicit state, manifest, parity checks."""
