"""A single-producer single-consumer ring buffer of float32 PCM.

The writer is an audio callback: it must never block, take a lock or allocate an audio
buffer, whatever the reader does. So the writer only ever copies into preallocated
memory and publishes two counters; everything else (waiting, overrun detection, dropping
the oldest audio, counting it) happens on the reader's side.

Counters are absolute sample counts that only grow (Python ints never wrap):

    _claimed   samples the writer has started to write (published *before* copying)
    _written   samples the writer has finished writing (published *after* copying)
    _read      samples the reader has consumed or dropped (only the reader stores it)

Sample `p` lives in slot `p % capacity`. The reader may copy positions `[r, r + n)` when
`_written >= r + n`; the copy is trustworthy only if no write overlapped it, i.e. if
`_claimed - r <= capacity` still holds *after* the copy (a seqlock). When the reader has
fallen more than `capacity` behind, the oldest audio is gone: the reader skips to the
newest `capacity` samples and counts the skipped samples as an overrun.
"""

from __future__ import annotations

import time

import numpy as np


class RingBuffer:
    """Lock-free SPSC float32 ring: `write` from one thread, `read` from another."""

    def __init__(self, capacity: int, poll_s: float = 0.002) -> None:
        if capacity <= 0:
            raise ValueError(f"ring capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self._poll_s = poll_s  # how often a waiting reader looks again (no lock to wait on)
        self._claimed = 0
        self._written = 0
        self._read = 0
        self._closed = False
        # Reader-side counters: exact, because only the reader changes them.
        self.overruns = 0  # times the reader found audio missing
        self.overrun_samples = 0  # samples dropped in total

    # ----------------------------------------------------------------- writer side
    def write(self, x: np.ndarray) -> None:
        """Append samples; never blocks. `x` is 1-D (a strided view such as
        `indata[:, 0]` is fine: it is copied straight into the ring)."""
        n = x.shape[0]
        if n == 0:
            return
        cap = self.capacity
        w = self._written
        if n > cap:  # only the newest `cap` samples can survive this write anyway
            w += n - cap
            x = x[n - cap :]
            n = cap
        self._claimed = w + n  # publish the claim first: readers recheck it after copying
        start = w % cap
        first = min(n, cap - start)
        self._buf[start : start + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self._written = w + n

    def close(self) -> None:
        """End of stream: readers get what is left, then nothing."""
        self._closed = True

    # ----------------------------------------------------------------- reader side
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def available(self) -> int:
        """Samples readable now (at most `capacity`)."""
        return min(self._written - self._read, self.capacity)

    @property
    def total_written(self) -> int:
        return self._written

    @property
    def read_position(self) -> int:
        """Samples consumed or dropped so far (the reader's absolute position)."""
        return self._read

    def _drop_overrun(self) -> None:
        w = self._written
        if w - self._read > self.capacity:
            dropped = w - self.capacity - self._read
            self._read += dropped
            self.overruns += 1
            self.overrun_samples += dropped

    def read_into(self, out: np.ndarray, timeout: float | None = None) -> bool:
        """Fill `out` (1-D float32) with the next `len(out)` samples.

        Waits until that many are written; returns False on timeout, or when the ring is
        closed with fewer than `len(out)` samples left (`read_tail` returns those).
        """
        n = out.shape[0]
        if n > self.capacity:
            raise ValueError(f"read of {n} samples exceeds ring capacity {self.capacity}")
        deadline = None if timeout is None else time.monotonic() + timeout
        cap = self.capacity
        while True:
            self._drop_overrun()
            r = self._read
            if self._written - r >= n:
                start = r % cap
                first = min(n, cap - start)
                out[:first] = self._buf[start : start + first]
                if first < n:
                    out[first:] = self._buf[: n - first]
                if self._claimed - r <= cap:  # no write overlapped what we copied
                    self._read = r + n
                    return True
                continue  # lapped during the copy: count the loss and read newer audio
            if self._closed and self._written - r < n:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self._poll_s)

    def read(self, n: int, timeout: float | None = None) -> np.ndarray | None:
        out = np.empty(n, dtype=np.float32)
        return out if self.read_into(out, timeout) else None

    def read_tail(self) -> np.ndarray:
        """After `close`: every sample still unread (fewer than a chunk), then empty."""
        self._drop_overrun()
        r, w = self._read, self._written
        idx = np.arange(r, w) % self.capacity
        tail = self._buf[idx].copy()
        self._read = w
        return tail
