"""The fixed-capacity KV cache and its budget policy, driven by a numpy reference decoder
layer (rotary attention over unrotated cached keys, the Contract 3 inputs), on a stream
many times longer than the budget."""

from __future__ import annotations

import numpy as np
import pytest

from soundflow.runtime.kvcache import MASKED, CachePolicy, KVCache

H, D, HID = 2, 8, 16  # kv heads, head dim, hidden


def rope(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """x (..., T, D) rotated by integer positions pos (T,)."""
    half = D // 2
    inv = 1.0 / (10000 ** (np.arange(half) / half))
    ang = pos[:, None] * inv[None, :]  # (T, half)
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


class RefLayer:
    """One attention layer that takes exactly the decoder graph's inputs."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.wq, self.wk, self.wv = (rng.normal(0, 0.3, (HID, H * D)) for _ in range(3))

    def __call__(self, x, mask, pos, past_k, past_v):
        """x (q, HID); mask (1,1,q,C+q); pos (1,C+q); past (1,H,C,D) -> out (q,H,D), new k/v."""
        q = x.shape[0]
        split = lambda m: (x @ m).reshape(q, H, D).transpose(1, 0, 2)[None]  # noqa: E731
        qq, k_new, v_new = split(self.wq), split(self.wk), split(self.wv)  # (1,H,q,D)
        keys = np.concatenate([past_k, k_new], axis=2)
        vals = np.concatenate([past_v, v_new], axis=2)
        kr = rope(keys, pos[0])
        qr = rope(qq, pos[0, -q:])
        scores = qr @ kr.transpose(0, 1, 3, 2) / np.sqrt(D) + mask  # (1,H,q,C+q)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        return (w @ vals)[0].transpose(1, 0, 2), k_new, v_new

    def full(self, xs):
        """Reference: the same layer over an explicit sequence, positions 0..n-1, causal."""
        n = len(xs)
        mask = np.triu(np.full((n, n), MASKED), 1)[None, None]
        empty = np.zeros((1, H, 0, D))
        out, _, _ = self(xs, mask, np.arange(n)[None], empty, empty)
        return out


def _run(policy: CachePolicy, n_calls: int, seed: int = 1):
    layer = RefLayer()
    cache = KVCache(1, H, D, HID, policy)
    buffers = [id(a) for a in (*cache.keys, *cache.values, cache.positions)]
    rng = np.random.default_rng(seed)
    prompt = rng.normal(size=(policy.sinks, HID))
    kept = []  # the token sequence the cache should now represent
    calls = [prompt] + [rng.normal(size=(int(rng.integers(1, 7)), HID)) for _ in range(n_calls)]
    for x in calls:
        if cache.needs_room(len(x)):
            again = cache.evict()
            kept = kept[: policy.sinks] + kept[len(kept) - policy.window :]
            if again is not None:  # reprefill: run the kept inputs through the layer again
                np.testing.assert_allclose(again, np.stack(kept))
                mask, pos = cache.inputs(len(again))
                _, k, v = layer(again, mask, pos, cache.keys[0], cache.values[0])
                cache.add([(k, v)], again)
        mask, pos = cache.inputs(len(x))
        out, k, v = layer(x, mask, pos, cache.keys[0], cache.values[0])
        cache.add([(k, v)], x)
        kept += list(x)
        # The cache is exactly the kept sequence, whatever happened before.
        np.testing.assert_allclose(out, layer.full(np.stack(kept))[-len(x) :], rtol=1e-4, atol=1e-5)
        assert cache.length == len(kept) <= policy.capacity
        live = np.sort(cache.positions[cache.valid])
        np.testing.assert_array_equal(live, np.arange(len(kept)))  # contiguous positions
        assert cache.next_pos == len(kept) < policy.capacity + 7
    assert [id(a) for a in (*cache.keys, *cache.values, cache.positions)] == buffers
    return cache, kept, prompt


@pytest.mark.parametrize("mode", ["evict", "reprefill"])
def test_stream_many_times_the_budget_keeps_sinks_window_and_flat_memory(mode):
    policy = CachePolicy.default(capacity=48, sinks=2, max_query=8, mode=mode)
    cache, kept, prompt = _run(policy, n_calls=600)  # ~2100 entries through 48 slots
    assert cache.evictions > 30 and cache.evicted > 1500
    sinks = np.flatnonzero(cache.valid & (cache.positions < policy.sinks))
    assert len(sinks) == policy.sinks
    np.testing.assert_allclose(np.stack(kept[: policy.sinks]), prompt)  # the prompt stays


def test_mask_and_positions_layout():
    cache = KVCache(2, H, D, HID, CachePolicy(capacity=6, sinks=1, window=2))
    mask, pos = cache.inputs(3)
    assert mask.shape == (1, 1, 3, 9) and pos.shape == (1, 9)
    assert (mask[0, 0, :, :6] == MASKED).all()  # empty cache: everything masked
    np.testing.assert_array_equal(mask[0, 0, :, 6:] == 0, np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(pos[0, 6:], [0, 1, 2])
    new = [(np.ones((1, H, 3, D)), np.ones((1, H, 3, D)))] * 2
    slots = cache.add(new)
    mask, pos = cache.inputs(1)
    assert (mask[0, 0, 0, slots] == 0).all() and (mask[0, 0, 0, 3:6] == MASKED).all()
    assert pos[0, -1] == 3
    cache.rollback(1)
    assert cache.length == 2 and cache.inputs(1)[1][0, -1] == 2


def test_policy_validation():
    with pytest.raises(ValueError, match="too small"):
        CachePolicy.default(capacity=10, sinks=2, max_query=8)
    with pytest.raises(ValueError, match="policy"):
        CachePolicy(capacity=10, sinks=2, window=4, mode="lru")
