"""Benchmarks behind `soundflow bench`: latency, scale, size, peer, soak (results: benchmarks/)."""
