"""Benchmarks, code and results side by side: the modules behind `soundflow bench` (latency,
scale, size, peer, soak, serve; `common` is their shared probe), the standalone scripts
(`ablations.py`, `data_throughput.py`, `qwen_dims.py`, `whisper_streaming.py`, `table.py`,
`run_all.sh`) and what they recorded (`results/`, described in README.md)."""
