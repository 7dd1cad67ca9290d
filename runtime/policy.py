"""What a decoder stream decides with and how its turns are framed, as small objects the
stream (runtime/kinds/decoder.py) delegates to, chosen once from the manifest's `control.mode`:

- `ControlTokenPolicy` (native bundles, Contract 2): p = softmax([logit_silence,
  logit_respond])[1] at the chunk's last embedding; respond iff p >= threshold.
- `UtteranceEndDecision` (fallback bundles, a plain chat model): the energy-based
  utterance-end policy of runtime/fallback.py decides from the chunk's PCM; an explicit
  threshold option overrides it (respond iff its p >= threshold).

`Turns` holds the token ids the protocol feeds around audio and responses: native
`<silence>` / `<respond>` / `<eos>`; fallback nothing between chunks of one user turn, the
mode's `respond_ids` to open the assistant turn and `resume_ids` to close it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from soundflow.runtime.fallback import FallbackOptions, UtteranceEndPolicy


@dataclass
class Decision:
    p: float  # p(<respond>)
    respond: bool  # p >= threshold (before the refractory check)


def control_p(logits: np.ndarray, silence: int, respond: int) -> float:
    """p(<respond>) of the two-way softmax over the control tokens' logits."""
    pair = logits[[silence, respond]].astype(np.float64)
    return float(np.exp(pair[1] - np.logaddexp(pair[0], pair[1])))


class DecisionPolicy(Protocol):
    needs_pcm: bool  # decide() reads the chunk's samples

    def decide(self, logits: np.ndarray, pcm: np.ndarray | None) -> Decision: ...

    def reset(self) -> None: ...


class ControlTokenPolicy:
    needs_pcm = False

    def __init__(self, silence: int, respond: int, threshold: float) -> None:
        self.silence, self.respond, self.threshold = silence, respond, threshold

    def decide(self, logits: np.ndarray, pcm: np.ndarray | None = None) -> Decision:
        p = control_p(logits, self.silence, self.respond)
        return Decision(p, p >= self.threshold)

    def reset(self) -> None:
        pass


class UtteranceEndDecision:
    needs_pcm = True

    def __init__(
        self, sample_rate: int, options: FallbackOptions, threshold: float | None = None
    ) -> None:
        self.policy = UtteranceEndPolicy(sample_rate, options)
        self.threshold = threshold  # an explicit option overrides the policy's own decision

    def decide(self, logits: np.ndarray, pcm: np.ndarray | None) -> Decision:
        if pcm is None:
            raise ValueError("a fallback-control bundle decides from the chunk's PCM: pass pcm")
        d = self.policy.step(pcm)
        if self.threshold is not None:
            return Decision(d.p, d.p >= self.threshold)
        return Decision(d.p, d.respond)

    def reset(self) -> None:
        self.policy.reset()


@dataclass(frozen=True)
class Turns:
    between: tuple[int, ...]  # fed before the next chunk's audio after a silent chunk
    respond: tuple[int, ...]  # opens a response
    resume: tuple[int, ...]  # follows a response (before the next chunk's audio)


def for_spec(spec, mode: str, threshold: float, threshold_option: float | None):
    """(decision policy, turns) for a bundle's control mode."""
    c = spec.control
    if spec.control_mode == "fallback":
        options = FallbackOptions.from_manifest(spec.manifest)
        decision = UtteranceEndDecision(spec.sample_rate, options, threshold_option)
        turns = Turns((), tuple(spec.respond_ids[mode]), tuple(spec.resume_ids))
        return decision, turns
    decision = ControlTokenPolicy(c["silence"], c["respond"], threshold)
    return decision, Turns((c["silence"],), (c["respond"],), (c["eos"],))
