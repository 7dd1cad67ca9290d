"""The edge runtime: sources, ring buffer, perceive/respond threads, engines, events.

Imports numpy and onnxruntime only; never torch.
"""
