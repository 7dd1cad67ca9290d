"""`soundflow bench alerts` through the CLI on short stretches of its real held-out audio: the
report's counts agree with each other and with the audio's length."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from soundflow.cli.main import cli


def _alerts(tmp_path, *args) -> dict:
    out = tmp_path / "alerts.json"
    res = CliRunner().invoke(
        cli, ["bench", "alerts", *args, "--json", str(out)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_benign_stretch_counts_add_up(smoke_bundle, tmp_path):
    """Half a minute of the benign hour, the smoke bundle's decoder step deciding (an
    untrained model: it may alert on anything, which gives the counts something to add)."""
    from soundflow.benchmarks import alerts as al

    if not sorted((al.WIDELANDS_DIR / "music").glob("*.ogg")):
        pytest.skip(f"widelands-data absent: run {al.SETUP}")
    r = _alerts(
        tmp_path, "--bundle", str(smoke_bundle), "--benign-minutes", "0.5",
        "--deciders", "protocol", "--event-streams", "0",
    )  # fmt: skip
    b = r["benign"]
    assert r["events"] is None and b["minutes"] == pytest.approx(0.5, abs=0.4 / 60)
    assert b["hours"] == pytest.approx(b["minutes"] / 60, abs=1e-4)
    kinds = b["seconds_by_kind"]
    assert kinds["music"] > 0 and kinds["sound"] > 0  # a block of sounds, then music
    assert sum(kinds.values()) == pytest.approx(b["minutes"] * 60, abs=0.5)
    (row,) = r["deciders"]
    assert row["decider"] == "protocol" and "events" not in row
    f = row["benign"]
    assert sum(f["false_by_label"].values()) == f["false_alerts"] == len(f["alerts"])
    assert sum(f["by_kind"].values()) == f["false_alerts"]
    assert f["false_per_hour"] == pytest.approx(f["false_alerts"] / b["hours"], rel=0.01)
    for label, n in f["false_by_label"].items():
        assert f["false_per_hour_by_label"][label] == pytest.approx(n / b["hours"], rel=0.01)
    assert all(0 <= a["t"] <= b["minutes"] * 60 for a in f["alerts"])
    # the same stretch, built again, is the same audio
    x = al.benign_streams(0.5)[0][0]["samples"]
    assert (x == al.benign_streams(0.5)[0][0]["samples"]).all()


def test_a_decider_the_bundle_lacks_is_refused(smoke_bundle):
    res = CliRunner().invoke(
        cli, ["bench", "alerts", "--bundle", str(smoke_bundle), "--deciders", "tagger"]
    )
    assert res.exit_code != 0 and "has no tagger decider" in res.output
    res = CliRunner().invoke(cli, ["bench", "alerts", "--deciders", "siren"])
    assert res.exit_code != 0 and "--deciders" in res.output


@pytest.mark.slow
def test_held_out_event_stream_is_scored(smoke_bundle, tmp_path):
    """One held-out stream with an alert-worthy sound (Tux Paint's, installed by
    setup-dev.sh): recall and latency per label from the same alerts. Slow: alert_heads'
    held-out set is built whole (its draws depend on every sound), some 30 s."""
    from soundflow.train import heldout

    if not heldout.TUXPAINT_DIR.is_dir():
        pytest.skip(f"{heldout.TUXPAINT_DIR} absent: apt-get install tuxpaint-stamps-default")
    r = _alerts(
        tmp_path, "--bundle", str(smoke_bundle), "--benign-minutes", "0",
        "--event-streams", "1",
    )  # fmt: skip
    assert r["benign"] is None and r["events"]["streams"] == 1
    (row,) = r["deciders"]
    e = row["events"]
    assert e["events"] == r["events"]["alert_events"] >= 1
    assert sum(v["events"] for v in e["per_label"].values()) == e["events"]
    assert sum(v["named"] for v in e["per_label"].values()) == e["named"] <= e["events"]
    assert sum(e["false_by_label"].values()) == e["false_alerts"]
    for label, lat in e["latency_chunks"].items():
        assert lat["alerted"] >= e["per_label"][label]["named"]
        assert 0 <= lat["median"] <= lat["max"]
