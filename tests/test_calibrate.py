"""Decision calibration's choice per tag: the lowest threshold within the false-response
budget, the grid's top when none is, and a curve that reads off any other budget."""

from __future__ import annotations

from soundflow.train.calibrate import GRID, choose


def test_lowest_threshold_within_budget():
    # Two hours of dev audio, budget 0.5/h: one false response may stay.
    rows = [(0.9, "hit"), (0.7, "hit"), (0.42, "hit"), (0.8, "false"), (0.5, "wrong")]
    row = choose(rows, hours=2.0, false_per_hour=0.5)
    assert row["threshold"] == 0.55  # 0.5 would keep both non-hits (1/h)
    assert (row["hits_kept"], row["false_kept"]) == (2, 1)
    assert (row["hits"], row["false"], row["responses"]) == (3, 2, 5)


def test_no_threshold_within_budget_gives_the_top():
    rows = [(0.99, "false"), (0.98, "wrong"), (0.6, "hit")]
    row = choose(rows, hours=1.0, false_per_hour=0.5)
    assert row["threshold"] == GRID[-1] and row["hits_kept"] == 0


def test_curve_reads_off_another_budget():
    rows = [(0.35, "hit"), (0.45, "false"), (0.65, "hit"), (0.75, "false")]
    row = choose(rows, hours=1.0, false_per_hour=0.0)
    curve = {thr: (h, f) for thr, h, f in row["curve"]}
    assert [c[0] for c in row["curve"]] == list(GRID)
    assert curve[0.3] == (2, 2) and curve[0.5] == (1, 1) and curve[0.8] == (0, 0)
    loose = choose(rows, hours=1.0, false_per_hour=1.0)
    assert loose["threshold"] == 0.5 and row["threshold"] == 0.8
