"""The torch backend of the runtime's engine interface: the exported torch modules behind
`OrtEngine`'s methods (`new_state`, `encode`, `bind_cache`, `decode_step`, `embed`), so the
runtime's own streams (`runtime/kinds/decoder.py`) drive a checkpoint exactly as they drive its
bundle. Parity (export/parity.py) then compares two backends under one driver (whisper's
`Inference` seam); `export/whisper_reference.py`'s `TorchCrossEngine` is the same for the
cross-attention kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from soundflow.runtime.bundle import BundleSpec, load_spec
from soundflow.runtime.detokenize import Detokenizer
from soundflow.runtime.engine import contract_names, zero_state
from soundflow.runtime.kvcache import KVCache
from soundflow.runtime.options import RuntimeOptions


class TorchEngine:
    """`encoder(audio, *state) -> (embeds, *state_out)` and `decoder(inputs_embeds,
    attention_mask, position_ids, *past) -> (logits, *present)`: torch modules with the
    graphs' signatures (export/graphs.py), run on the bundle's spec and embedding table."""

    provider = "torch"

    def __init__(
        self,
        spec: BundleSpec | str,
        encoder: nn.Module,
        decoder: nn.Module,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, BundleSpec) else load_spec(spec)
        self.options = options or RuntimeOptions()
        self.enc, self.dec = encoder.eval(), decoder.eval()
        self.past_names, self.present_names = contract_names(self.spec)
        self.embed_tokens = np.load(self.spec.embeddings_file).astype(np.float32, copy=False)
        self.detokenizer = Detokenizer.from_file(self.spec.tokenizer_file)

    @classmethod
    def from_model(cls, model, bundle: BundleSpec | str, options=None) -> TorchEngine:
        """A soundflow checkpoint's model (train/kinds/decoder/model.py) in its export wrappers."""
        from soundflow.export.graphs import CachedDecoder, EncoderGraph

        return cls(bundle, EncoderGraph(model), CachedDecoder(model.decoder), options)

    def new_state(self) -> dict[str, np.ndarray]:
        return zero_state(self.spec)

    reset = new_state

    @torch.no_grad()
    def encode(self, audio: np.ndarray, state: dict[str, np.ndarray]):
        """As OrtEngine.encode: audio (1, chunk_samples) -> (embeds (n, hidden), next state)."""
        if audio.shape != (1, self.spec.chunk_samples):
            raise ValueError(f"encoder takes (1, {self.spec.chunk_samples}) samples per chunk")
        states = self.spec.encoder_state
        args = [torch.from_numpy(np.ascontiguousarray(audio))]
        args += [torch.from_numpy(state[s.input]) for s in states]
        embeds, *outs = self.enc(*args)
        new = {s.input: o.numpy() for s, o in zip(states, outs, strict=True)}
        return embeds[0].numpy(), new

    def bind_cache(self, cache: KVCache) -> Any:
        return cache  # torch reads the cache arrays in place on every call

    @torch.no_grad()
    def decode_step(self, binding: KVCache, embeds, mask, positions):
        """As OrtEngine.decode_step: -> (logits (q, vocab), per layer (key, value) new)."""
        t = torch.from_numpy
        past = [t(a) for k, v in zip(binding.keys, binding.values, strict=True) for a in (k, v)]
        x = t(np.ascontiguousarray(embeds[None], np.float32))
        logits, *new = self.dec(x, t(mask), t(positions), *past)
        presents = [(new[2 * i].numpy(), new[2 * i + 1].numpy()) for i in range(self.spec.layers)]
        return logits[0].numpy(), presents

    def embed(self, ids) -> np.ndarray:
        return self.embed_tokens[list(ids)]
