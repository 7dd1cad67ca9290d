"""The SPSC ring buffer, with real concurrent writer and reader threads.

Samples are consecutive integers stored as float32 (exact below 2**24), so the reader can
tell precisely which samples it got, which it lost and whether any came twice.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from soundflow.runtime.ring import RingBuffer


def _writer(ring: RingBuffer, total: int, block_sizes: np.ndarray, pause_s: float) -> None:
    pos = 0
    i = 0
    data = np.arange(total, dtype=np.float32)
    while pos < total:
        n = int(min(block_sizes[i % len(block_sizes)], total - pos))
        ring.write(data[pos : pos + n])
        pos += n
        i += 1
        if pause_s:
            time.sleep(pause_s)
    ring.close()


def _drain(ring: RingBuffer, chunk: int, stall_s: float = 0.0):
    """Read exact chunks until closed; record each chunk with the overrun seen before it."""
    got = []
    out = np.empty(chunk, dtype=np.float32)
    while True:
        before = ring.overrun_samples
        if not ring.read_into(out, timeout=5.0):
            break
        got.append((ring.overrun_samples - before, out.copy()))
        if stall_s:
            time.sleep(stall_s)
    return got, ring.read_tail()


def test_single_thread_wraparound_and_exact_reads():
    ring = RingBuffer(10)
    ring.write(np.arange(7, dtype=np.float32))
    np.testing.assert_array_equal(ring.read(4), [0, 1, 2, 3])
    ring.write(np.arange(7, 13, dtype=np.float32))  # wraps around the end
    np.testing.assert_array_equal(ring.read(9), np.arange(4, 13))
    assert ring.read(1, timeout=0.01) is None  # nothing left: times out, no block
    assert ring.overruns == 0


def test_overrun_drops_oldest_and_counts_exactly():
    ring = RingBuffer(100)
    ring.write(np.arange(1000, dtype=np.float32))  # one write larger than the ring
    ring.write(np.arange(1000, 1050, dtype=np.float32))
    chunk = ring.read(40)
    # The newest 100 samples survive: 950..1049; 950 samples were dropped.
    np.testing.assert_array_equal(chunk, np.arange(950, 990))
    assert ring.overrun_samples == 950 and ring.overruns == 1
    ring.close()
    np.testing.assert_array_equal(ring.read(60), np.arange(990, 1050))
    assert ring.read(1) is None and ring.read_tail().size == 0


def test_concurrent_reader_keeps_up_nothing_lost_or_duplicated():
    total, chunk = 400_000, 6400
    ring = RingBuffer(64_000)
    sizes = np.random.default_rng(0).integers(1, 1600, size=997)
    w = threading.Thread(target=_writer, args=(ring, total, sizes, 0.002))
    w.start()
    got, tail = _drain(ring, chunk)
    w.join()
    received = np.concatenate([c for _, c in got] + [tail])
    assert ring.overruns == 0
    assert all(len(c) == chunk for _, c in got)
    np.testing.assert_array_equal(received, np.arange(total, dtype=np.float32))


def test_concurrent_slow_reader_exact_overrun_accounting():
    total, chunk = 300_000, 1000
    ring = RingBuffer(5000)
    sizes = np.random.default_rng(1).integers(100, 2000, size=101)
    w = threading.Thread(target=_writer, args=(ring, total, sizes, 0.0005))
    w.start()
    got, tail = _drain(ring, chunk, stall_s=0.01)  # the reader falls behind
    w.join()
    assert ring.overruns > 0
    expected_next = 0
    for dropped, c in got:
        assert dropped >= 0
        # Exactly `dropped` samples are missing before this chunk, none are repeated,
        # and each chunk is one contiguous run.
        assert c[0] == expected_next + dropped
        np.testing.assert_array_equal(c, np.arange(c[0], c[0] + chunk, dtype=np.float32))
        expected_next = int(c[-1]) + 1
    if tail.size:
        assert tail[0] >= expected_next
        expected_next = int(tail[-1]) + 1
    assert expected_next == total
    received = sum(len(c) for _, c in got) + tail.size
    assert received + ring.overrun_samples == total


def test_rejects_reads_larger_than_capacity():
    with pytest.raises(ValueError, match="exceeds ring capacity"):
        RingBuffer(10).read(11)
