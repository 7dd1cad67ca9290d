"""Audio constants live in soundflow/audio.py alone (issue #29): no other module of the
package spells the sample rate as a number (help text and messages may name it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("runtime", "cli", "export", "train", "benchmarks", "soundflow")
HOME = ROOT / "soundflow" / "audio.py"


def _numbers(path: Path, value: int) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and type(n.value) is int and n.value == value
    ]


def test_the_sample_rate_is_written_once():
    from soundflow.audio import SAMPLE_RATE

    found = {}
    for d in PACKAGE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            if path != HOME and (lines := _numbers(path, SAMPLE_RATE)):
                found[str(path.relative_to(ROOT))] = lines
    assert found == {}, f"use soundflow.audio.SAMPLE_RATE: {found}"
    assert _numbers(HOME, SAMPLE_RATE), "soundflow/audio.py defines it"


def test_the_check_finds_a_number(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("RATE = 16_000\nHELP = 'resample to 16000 Hz'\n")
    assert _numbers(f, 16000) == [1]
