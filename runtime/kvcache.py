"""The decoder's fixed-capacity KV cache, in numpy, with a budget policy for unbounded streams.

Layout (ARCHITECTURE.md, Contract 3): per layer one key and one value array of shape
(1, kv_heads, capacity, head_dim), allocated once. Each decoder call returns only the new
entries (`present.{i}.*`, (1, kv_heads, q, head_dim), unrotated); they are written in place
into free slots. Every slot has a rotary position; empty slots are masked. The graph
always gets the whole fixed-capacity cache, so shapes are static and no step copies it.

Budget (`CachePolicy`): the first `sinks` entries (the task prompt: `<|bos|> <|task:M|>`)
are attention sinks and are never evicted. When a call would not fit, either

- `evict` (StreamingLLM): drop the oldest non-sink entries, keeping the newest `window`,
  and renumber the kept entries' positions contiguously after the sinks. Keys are stored
  unrotated, so renumbering is free (the graph rotates by `position_ids`); or
- `reprefill`: clear the cache and run the kept entries' input embeddings (sinks +
  window) through the decoder again as one prefill, so their keys see only the context
  that is still there. Costs one larger call per eviction; the cache is exact afterwards.

Either way memory is flat and positions stay below `capacity + q` for ever.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from soundflow.protocol import MASK_VALUE

MASKED = MASK_VALUE  # the contract's additive mask value (not -inf: fp16 engines stay finite)
POLICIES = ("evict", "reprefill")


def attention_inputs(
    valid: np.ndarray,
    positions: np.ndarray,
    next_pos: int,
    q: int,
    mask_value: float = MASKED,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    causal: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The decoder's attention_mask (1, 1, q, C + q), additive, and position_ids (1, C + q)
    for q new entries after C cache slots (`valid`, their `positions`); the new entries take
    positions next_pos.. and attend causally. The one place these inputs are built (the
    stream's cache, the benchmarks' bare calls and offline passes all come here); `out` and
    `causal` are preallocated buffers."""
    c = len(valid)
    if out is None:
        out = (np.empty((1, 1, q, c + q), np.float32), np.empty((1, c + q), np.int64))
    mask, pos = out
    mask[0, 0, :, :c] = np.where(valid, 0.0, mask_value)[None, :]
    if causal is None:
        causal = np.triu(np.full((q, q), mask_value, np.float32), k=1)
    mask[0, 0, :, c:] = causal
    pos[0, :c] = positions
    np.add(np.arange(q, dtype=np.int64), next_pos, out=pos[0, c:])
    return mask, pos


@dataclass(frozen=True)
class CachePolicy:
    capacity: int  # slots per layer (the budget); at most the bundle's cache capacity
    sinks: int  # leading entries never evicted (the task prompt)
    window: int  # newest non-sink entries kept when the budget is reached
    mode: str = "evict"  # "evict" | "reprefill"

    def __post_init__(self) -> None:
        if self.mode not in POLICIES:
            raise ValueError(f"cache policy {self.mode!r}: use one of {POLICIES}")
        if self.window < 1 or self.sinks + self.window >= self.capacity:
            raise ValueError(
                f"cache budget {self.capacity} leaves no room after {self.sinks} sinks and a "
                f"{self.window}-entry window; raise the budget or shrink the window"
            )

    @classmethod
    def default(cls, capacity: int, sinks: int, max_query: int, mode: str = "evict") -> CachePolicy:
        """Keep 3/4 of the room after the sinks (evictions are rare and batched), and
        always leave space for the largest call (`max_query` new entries)."""
        room = capacity - sinks - max_query
        if room < 2:
            raise ValueError(
                f"cache budget {capacity} is too small for {sinks} sink entries plus calls of "
                f"{max_query} entries; use a budget of at least {sinks + max_query + 2}"
            )
        return cls(capacity, sinks, max(1, room * 3 // 4), mode)


class KVCache:
    """Fixed slots for every layer, positions per slot, insertion order for eviction."""

    def __init__(
        self,
        n_layers: int,
        kv_heads: int,
        head_dim: int,
        hidden: int,
        policy: CachePolicy,
        row_dtype: type = np.float32,
        mask_value: float = MASKED,
    ) -> None:
        cap = policy.capacity
        self.policy = policy
        self.mask_value = float(mask_value)  # the bundle's (manifest `decoder.mask_value`)
        self.keys = [np.zeros((1, kv_heads, cap, head_dim), np.float32) for _ in range(n_layers)]
        self.values = [np.zeros((1, kv_heads, cap, head_dim), np.float32) for _ in range(n_layers)]
        self.positions = np.zeros(cap, np.int64)  # rotary position per slot
        self.valid = np.zeros(cap, bool)
        self.seq = np.full(cap, -1, np.int64)  # insertion order (-1 = empty)
        # Each slot's input (an embedding row, or a token id for decoders that embed their
        # own ids: row_dtype int64, hidden 1), kept only where a re-prefill needs them.
        self.embeds = np.zeros((cap, hidden), row_dtype) if policy.mode == "reprefill" else None
        self._bufs: dict[int, tuple[np.ndarray, ...]] = {}  # per-q mask/position buffers
        self.reset()

    def reset(self) -> None:
        self.valid[:] = False
        self.seq[:] = -1
        self.positions[:] = 0
        self.next_pos = 0  # rotary position of the next entry
        self.next_seq = 0
        self.evictions = 0
        self.evicted = 0  # entries dropped in total

    @property
    def capacity(self) -> int:
        return self.policy.capacity

    @property
    def length(self) -> int:
        return int(self.valid.sum())

    # ------------------------------------------------------------------ budget
    def needs_room(self, q: int) -> bool:
        return self.length + q > self.capacity

    def evict(self) -> np.ndarray | None:
        """Apply the policy. `evict`: drop and renumber, return None. `reprefill`: clear
        the cache and return the kept entries' input embeddings (k, hidden), which the
        caller must prefill again (with `add` as usual)."""
        p = self.policy
        order = np.flatnonzero(self.valid)
        order = order[np.argsort(self.seq[order])]  # slots, oldest first
        sinks = order[: p.sinks]
        rest = order[p.sinks :]
        keep, drop = rest[len(rest) - p.window :], rest[: len(rest) - p.window]
        self.evictions += 1
        self.evicted += len(drop)
        if p.mode == "reprefill":
            kept = np.concatenate([self.embeds[sinks], self.embeds[keep]])  # type: ignore[index]
            counts = self.evictions, self.evicted
            self.reset()
            self.evictions, self.evicted = counts
            return kept
        self.valid[drop] = False
        self.seq[drop] = -1
        # Contiguous renumbering: sinks keep 0..s-1, the window follows.
        self.positions[sinks] = np.arange(len(sinks))
        self.positions[keep] = np.arange(len(sinks), len(sinks) + len(keep))
        self.next_pos = len(sinks) + len(keep)
        return None

    # ------------------------------------------------------------------ one call
    def inputs(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """attention_mask (1, 1, q, cap + q) float32 additive and position_ids
        (1, cap + q) int64 for the next `q` entries (call `needs_room`/`evict` first)."""
        if self.needs_room(q):
            raise RuntimeError(f"no room for {q} entries: call evict() first")
        cap = self.capacity
        if q not in self._bufs:  # preallocated per query length (a handful ever occur)
            self._bufs[q] = (
                np.empty((1, 1, q, cap + q), np.float32),
                np.empty((1, cap + q), np.int64),
                np.triu(np.full((q, q), self.mask_value, np.float32), k=1),
            )
        mask, pos, causal = self._bufs[q]
        return attention_inputs(
            self.valid, self.positions, self.next_pos, q, self.mask_value, (mask, pos), causal
        )

    def add(
        self,
        presents: list[tuple[np.ndarray, np.ndarray]],
        embeds: np.ndarray | None = None,
    ) -> np.ndarray:
        """Write one call's new entries (per layer (key, value), each (1, H, q, D)) into
        free slots, in place. Returns the slots used."""
        q = presents[0][0].shape[2]
        slots = np.flatnonzero(~self.valid)[:q]
        if len(slots) < q:
            raise RuntimeError(f"no room for {q} entries: call evict() first")
        for (k, v), kc, vc in zip(presents, self.keys, self.values, strict=True):
            kc[:, :, slots, :] = k
            vc[:, :, slots, :] = v
        self.valid[slots] = True
        self.seq[slots] = np.arange(self.next_seq, self.next_seq + q)
        self.positions[slots] = np.arange(self.next_pos, self.next_pos + q)
        if self.embeds is not None and embeds is not None:
            self.embeds[slots] = embeds.reshape(q, -1)
        self.next_seq += q
        self.next_pos += q
        return slots

    def rollback(self, n: int) -> None:
        """Forget the newest `n` entries (an answer suppressed after its first step)."""
        if n <= 0:
            return
        order = np.flatnonzero(self.valid)
        newest = order[np.argsort(self.seq[order])][-n:]
        self.valid[newest] = False
        self.seq[newest] = -1
        self.next_pos -= len(newest)
        self.next_seq -= len(newest)

    def nbytes(self) -> int:
        arrays = [*self.keys, *self.values, self.positions, self.valid, self.seq]
        if self.embeds is not None:
            arrays.append(self.embeds)
        return sum(a.nbytes for a in arrays)
