"""The SoundFlow model: streaming encoder + adapter + a `transformers` causal LM decoder,
and the dual loss L = L_lm + lambda * L_stream + mu * L_ctc.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from soundflow.train.config import ModelConfig
from soundflow.train.kinds.decoder.encoder import Adapter, StreamingEncoder
from soundflow.train.kinds.decoder.sequence import IGNORE, Layout, collate


def build_decoder(decoder_cfg: dict) -> nn.Module:
    """A Llama/Qwen2-family causal LM from a config dict (random weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(decoder_cfg)
    model_type = cfg.pop("model_type")
    hf_cfg = AutoConfig.for_model(model_type, **cfg)
    return AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="eager")


@dataclass(frozen=True)
class LossWeights:
    lambda_stream: float = 1.0  # weight of the control-token loss (paper's ablation: 1.0)
    mu_ctc: float = 0.3  # weight of the encoder CTC loss; 0 disables it


class SoundFlowModel(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = StreamingEncoder(cfg)
        self.adapter = Adapter(cfg)
        self.ctc_head = nn.Linear(cfg.encoder.d_model, len(cfg.ctc_alphabet) + 1)
        self.decoder = build_decoder(cfg.decoder)

    def audio_embeds(self, pcm: torch.Tensor):
        """(B, n_chunks * chunk_samples) -> adapter embeddings (B, n_chunks * n, H), frames."""
        frames = self.encoder.forward_stream(pcm)
        return self.adapter(frames), frames

    def forward(
        self,
        pcm: torch.Tensor,
        layouts: list[Layout],
        ctc_targets: list[list[int]] | None = None,
        control_ids: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss sums and their label counts, so a trainer can normalise over every rank and
        micro-batch of a step (exact data-parallel equivalence); see `combine_losses`.
        With `control_ids` (silence, respond) it also returns, at every control position,
        the expected and the predicted control token (`control_target`, `control_pred`)."""
        embeds, frames = self.audio_embeds(pcm)
        inputs, mask, stream_labels, lm_labels = collate(
            layouts, embeds, self.decoder.get_input_embeddings()
        )
        logits = self.decoder(inputs_embeds=inputs, attention_mask=mask).logits  # (B, L, V)
        out = decoder_losses(logits, stream_labels, lm_labels, control_ids)
        if ctc_targets is not None:
            out["ctc_sum"] = self.ctc_loss(frames, ctc_targets).sum()
            out["ctc_n"] = torch.tensor(len(ctc_targets))
        return out

    def ctc_loss(self, frames: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """Per-sample CTC loss per target character, (B,)."""
        log_probs = self.ctc_head(frames).log_softmax(-1).transpose(0, 1)  # (T, B, C)
        t, b, _ = log_probs.shape
        flat = torch.tensor([i for tgt in targets for i in tgt], dtype=torch.long)
        lengths = torch.tensor([len(tgt) for tgt in targets], dtype=torch.long)
        per_sample = F.ctc_loss(
            log_probs,
            flat.to(frames.device),
            torch.full((b,), t, dtype=torch.long),
            lengths,
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        return per_sample / lengths.clamp(min=1).to(per_sample)

    def ctc_ids(self, text: str) -> list[int]:
        """Characters of `text` as CTC labels (1-based; 0 is blank); others are dropped."""
        index = {ch: i + 1 for i, ch in enumerate(self.cfg.ctc_alphabet)}
        return [index[ch] for ch in " ".join(text.lower().split()) if ch in index]


def decoder_losses(
    logits: torch.Tensor,
    stream_labels: torch.Tensor,
    lm_labels: torch.Tensor,
    control_ids: tuple[int, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Loss sums and label counts of the decoder's two label streams; with `control_ids`
    (silence, respond) also the expected and predicted control token at each decision."""
    out = {
        "lm_sum": _ce_sum(logits, lm_labels),
        "lm_n": (lm_labels != IGNORE).sum(),
        "stream_sum": _ce_sum(logits, stream_labels),
        "stream_n": (stream_labels != IGNORE).sum(),
    }
    if control_ids is not None:
        pick = stream_labels != IGNORE
        pair = logits[..., list(control_ids)].argmax(-1)[pick]
        out["control_target"] = stream_labels[pick]
        out["control_pred"] = torch.where(pair == 1, control_ids[1], control_ids[0])
    return out


def _ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Over no labels this is 0 yet keeps the graph, so DDP's gradient hooks all fire.
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )


@dataclass
class LossTerms:
    """One micro-batch's loss and its terms (each a sum over the step's label count)."""

    loss: torch.Tensor  # L = L_lm + lambda * L_stream + mu * L_ctc: what is backpropagated
    lm: torch.Tensor
    stream: torch.Tensor
    ctc: torch.Tensor | None = None  # only when the model has a CTC head and mu > 0

    def items(self) -> list[tuple[str, torch.Tensor]]:
        """(name, value) of every term present, in log order (the train_log.jsonl keys)."""
        out = [("lm", self.lm), ("stream", self.stream)]
        if self.ctc is not None:
            out.append(("ctc", self.ctc))
        return [*out, ("loss", self.loss)]


def combine_losses(
    parts: dict[str, torch.Tensor], totals: dict[str, float], weights: LossWeights
) -> LossTerms:
    """Each term's sum over this micro-batch over its count in the whole step (all
    micro-batches, all ranks): L = L_lm + lambda * L_stream + mu * L_ctc."""
    lm = parts["lm_sum"] / max(totals["lm_n"], 1)
    stream = parts["stream_sum"] / max(totals["stream_n"], 1)
    loss = lm + weights.lambda_stream * stream
    ctc = None
    if "ctc_sum" in parts and weights.mu_ctc > 0:
        ctc = parts["ctc_sum"] / max(totals["ctc_n"], 1)
        loss = loss + weights.mu_ctc * ctc
    return LossTerms(loss, lm, stream, ctc)


def parameter_counts(model: SoundFlowModel) -> dict[str, int]:
    def count(m):
        return sum(p.numel() for p in m.parameters())

    return {
        "encoder": count(model.encoder) + count(model.adapter),
        "decoder": count(model.decoder),
        "ctc_head": count(model.ctc_head),
        "total": count(model),
    }
