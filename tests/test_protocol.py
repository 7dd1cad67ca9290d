"""The sequence protocol: where control tokens and responses sit and what they are trained on."""

from __future__ import annotations

from soundflow import protocol
from soundflow.train.kinds.decoder.sequence import IGNORE, layout


def test_layout_places_control_and_response_labels():
    sil, resp, eos = 4, 5, 3
    lay = layout(
        [2, 7], [None, [20, 21]], embeds_per_chunk=2, silence_id=sil, respond_id=resp, eos_id=eos
    )
    # prompt(2) | a a sil | a a resp 20 21 eos
    assert lay.token_ids == [2, 7, 0, 0, sil, 0, 0, resp, 20, 21, eos]
    assert lay.audio_index == [-1, -1, 0, 1, -1, 2, 3, -1, -1, -1, -1]
    assert lay.stream_labels == [IGNORE] * 3 + [sil] + [IGNORE] * 2 + [resp] + [IGNORE] * 4
    assert lay.lm_labels == [IGNORE] * 7 + [20, 21, eos, IGNORE]


def test_tags_round_trip():
    text = f"{protocol.alert_tag('smoke_alarm')}  a smoke  alarm is going off"
    tags, plain = protocol.parse_tags(text)
    assert tags == {"alert": "smoke_alarm"} and plain == "a smoke alarm is going off"
    assert protocol.chunk_index(0.399, 400) == 0 and protocol.chunk_index(0.4, 400) == 1
