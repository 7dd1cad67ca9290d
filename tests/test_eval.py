"""`soundflow eval`: the smoke model, trained here, scored through the runtime on toy streams
it never saw; and the scoring rules on hand-made runtime events."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from soundflow.cli.main import cli
from soundflow.runtime.events import Response
from soundflow.train.evaluate import edit_distance, new_alert_tally, score_alerts, score_assist


def _response(t, raw, tags=None):
    return Response(
        t=t,
        chunk=int(t / 0.4),
        text=raw,
        raw=raw,
        tags=tags or {},
        mode="alert",
        probability=0.9,
        decision_latency_ms=1.0,
        first_token_latency_ms=1.0,
        latency_ms=2.0,
        tokens=3,
    )


def test_alert_scoring_counts_hits_repeats_and_false_alerts():
    record = {
        "events": [
            {
                "start": 10.1,
                "end": 14.0,
                "category": "Equipment",
                "label": "smoke_alarm",
                "alert": True,
            },
            {"start": 30.0, "end": 31.0, "category": "Traffic", "label": "siren", "alert": True},
            {"start": 50.0, "end": 51.0, "category": "Daily", "label": "kettle", "alert": False},
        ]
    }
    responses = [
        _response(10.4, "<alert:smoke_alarm> a smoke alarm", {"alert": "smoke_alarm"}),
        _response(12.0, "<alert:smoke_alarm> a smoke alarm", {"alert": "smoke_alarm"}),  # repeat
        _response(50.4, "<alert:kettle> kettle", {"alert": "kettle"}),  # false alert
    ]
    acc = new_alert_tally()
    score_alerts(record, responses, 0.4, acc)
    assert (acc["events"], acc["detected"], acc["correct"]) == (2, 1, 1)
    assert (acc["repeats"], acc["false"], acc["responses"]) == (1, 1, 3)
    assert acc["delays"] == [pytest.approx(0.3)]
    assert acc["per_category"]["Traffic"] == [0, 1]


def test_assist_exact_match_and_unprompted():
    record = {
        "targets": {
            "assist": [
                {"t": 5.0, "text": "<intent:timer> timer set for five minutes"},
                {"t": 20.0, "text": "<intent:lights> turning the lights on"},
            ]
        }
    }
    responses = [
        _response(5.2, "<intent:timer> timer set for five minutes"),
        _response(20.4, "<intent:lights> turning the lights off"),
        _response(40.0, "<intent:lights> turning the lights on"),
    ]
    acc = {"targets": 0, "answered": 0, "exact": 0, "unprompted": 0}
    score_assist(record, responses, 0.4, acc)
    assert acc == {"targets": 2, "answered": 2, "exact": 1, "unprompted": 1}
    assert edit_distance("a b c".split(), "a x c d".split()) == 2


def test_eval_cli_scores_the_smoke_bundle(smoke_bundle, tmp_path):
    from soundflow.train.smoke import write_toy_split

    data = write_toy_split(tmp_path / "toy", n_streams=3)
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["eval", str(smoke_bundle), "--data", str(data), "--json", str(report_path)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    for key in ("wer", "trigger_accuracy", "false_alerts_per_hour", "assist_exact_match"):
        assert key in report
    assert report["streams"] == 3 and set(report["tasks"]) == {"transcribe", "alert", "assist"}
    assert 0.0 <= report["trigger_accuracy"] <= 1.0 and report["wer"] >= 0.0
    # A pipeline that silently broke scores WER 1.0 (no words) and detects nothing.
    assert report["wer"] < 0.9
    assert report["alert"]["recall"] > 0.0
    assert "transcribe WER" in result.output


def test_eval_cli_refuses_a_directory_without_streams(tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--data", str(tmp_path)])
    assert result.exit_code != 0 and "no streams.jsonl" in result.output


def test_eval_cli_scores_only_the_tasks_asked_for(smoke_bundle, tmp_path):
    """--task alert runs the streams in alert mode alone (the other figures stay empty); a
    task the bundle lacks is a one-line error that names the ones it has."""
    from soundflow.train.smoke import write_toy_split

    data = write_toy_split(tmp_path / "toy", n_streams=1)
    report_path = tmp_path / "report.json"
    args = ["eval", str(smoke_bundle), "--data", str(data), "--json", str(report_path)]
    result = CliRunner().invoke(cli, [*args, "--task", "alert"])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["tasks"] == ["alert"] and report["false_alerts_per_hour"] is not None
    assert report["wer"] is None and report["assist_exact_match"] is None
    result = CliRunner().invoke(cli, [*args, "--task", "sing"])
    assert result.exit_code != 0 and "'sing' is not one of this bundle's" in result.output
