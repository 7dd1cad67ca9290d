"""What a new user hit (issue #29): a runtime-only install, the help texts, a closed
pipe, short benchmark runs, a clone named `soundflow` in the working folder, and CI's
lint step. Each check runs the CLI as a user would (CliRunner, or a real process)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from soundflow.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "soundflow" / "assets" / "default_bundle"


def _flat(text: str) -> str:
    """Help text with click's line wrapping undone."""
    return " ".join(text.split())


def _soundflow() -> list[str]:
    exe = shutil.which("soundflow")
    return [exe] if exe else [sys.executable, "-m", "soundflow.cli"]


# ----------------------------------------------------------------------------- train extra
@pytest.mark.parametrize(
    "missing, args",
    [
        ("scipy", ["eval", "--data", "{data}"]),
        ("scipy", ["calibrate", "{bundle}", "--data", "{data}", "--dry-run"]),
        ("onnx", ["tagger", "{bundle}", "--data", "{data}", "--dev", "{data}", "--out", "{out}"]),
        ("torch", ["bench", "size", "--sizes", "tiny", "--work", "{out}", "--seconds", "1"]),
    ],
)
def test_commands_without_the_train_extra_say_how_to_install_it(tmp_path, missing, args):
    command = " ".join(args[:2] if args[0] == "bench" else args[:1])
    data = tmp_path / "split"
    data.mkdir()
    (data / "streams.jsonl").write_text("")
    fill = {"data": str(data), "bundle": str(DEFAULT), "out": str(tmp_path / "out")}
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"  # what a runtime-only install looks like
        "from soundflow.cli.main import cli\n"
        "cli(sys.argv[1:])\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, *(a.format(**fill) for a in args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert f"({missing} is not installed): pip install 'soundflow[train]'" in line
    assert line.startswith(f"Error: `soundflow {command}` needs the train extra")


def test_bench_serve_without_the_serve_extra_says_how_to_install_it(tmp_path):
    fake = tmp_path / "websockets"  # an install without websockets, in the server too
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError('No module named websockets', name='websockets')\n"
    )
    p = subprocess.run(
        [*_soundflow(), "bench", "serve", "--streams", "1", "--seconds", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=120,
    )
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        "Error: soundflow bench serve needs the WebSocket library: pip install 'soundflow[serve]'"
    ], p.stderr


# ----------------------------------------------------------------------------- help texts
def test_listen_help_names_the_default_bundles_first_mode():
    first = next(iter(json.loads((DEFAULT / "manifest.json").read_text())["tasks"]))
    text = _flat(CliRunner().invoke(cli, ["listen", "--help"]).output)
    assert f"for the embedded default is {first}." in text


def test_listen_help_says_stdin_takes_containers_too():
    text = _flat(CliRunner().invoke(cli, ["listen", "--help"]).output)
    assert "- for stdin: WAV, FLAC or Ogg there are recognised by their header" in text
    assert "MP3 and Matroska refused (convert them with ffmpeg)" in text
    assert "raw PCM on stdin." not in text


@pytest.mark.parametrize("head", [b"ID3\x04\x00", b"\x1a\x45\xdf\xa3"])
def test_listen_refuses_mp3_and_matroska_on_stdin_as_its_help_says(head):
    p = subprocess.run(
        [*_soundflow(), "listen", "--input", "-", "--fast"],
        input=head + bytes(64_000),
        capture_output=True,
        timeout=120,
    )
    err = p.stderr.decode()
    assert p.returncode == 1 and "Traceback" not in err, err
    assert "stdin looks like MP3 or Matroska" in err and "ffmpeg -i IN" in err


def test_top_level_help_lists_every_bench_command():
    from soundflow.cli.bench_cmd import bench

    top = _flat(CliRunner().invoke(cli, ["--help"]).output)
    own = _flat(CliRunner().invoke(cli, ["bench", "--help"]).output)
    assert COMMANDS["bench"][2] in top
    for name in bench.commands:
        assert name in COMMANDS["bench"][2], f"`soundflow --help` does not name bench {name}"
        assert name in own.split("Commands:")[0], f"bench's docstring does not name {name}"


def test_calibrate_example_and_refusal_keep_the_shipped_bundle(tmp_path):
    help_text = CliRunner().invoke(cli, ["calibrate", "--help"]).output
    example = [line.strip() for line in help_text.splitlines() if "soundflow calibrate" in line]
    assert example and all("assets/default_bundle" not in line for line in example)
    assert "cp -r soundflow/assets/default_bundle" in help_text
    (tmp_path / "streams.jsonl").write_text("")
    before = (DEFAULT / "manifest.json").read_bytes()
    r = CliRunner().invoke(cli, ["calibrate", str(DEFAULT), "--data", str(tmp_path)])
    assert r.exit_code == 1 and "is the shipped default bundle: calibrate a copy" in r.output
    assert (DEFAULT / "manifest.json").read_bytes() == before


# ----------------------------------------------------------------------------- closed pipe
QUIET_ON_A_CLOSED_PIPE = ("Error", "Traceback", "free space", "Broken pipe", "Exception ignored")


def test_listen_piped_into_head_ends_quietly_with_exit_0(tmp_path):
    # `soundflow listen ... | head -n 1` under pipefail: listen's exit status is the pipe's.
    err = tmp_path / "stderr"
    listen = [*_soundflow(), "listen", "--input", str(ROOT / "soundflow/assets/demo.flac")]
    cmd = shlex.join([*listen, "--fast"]) + f" 2>{shlex.quote(str(err))} | head -n 1"
    p = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert p.returncode == 0, err.read_text()
    assert len(p.stdout.splitlines()) == 1 and p.stdout.startswith("[")
    for bad in QUIET_ON_A_CLOSED_PIPE:
        assert bad not in err.read_text(), err.read_text()


@pytest.mark.parametrize("args", [["labels"], ["--help"], ["bench", "--help"], ["--version"]])
def test_other_commands_end_quietly_with_exit_0_when_stdout_has_no_reader(args):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line (`| head` that has quit)
    try:
        p = subprocess.run([*_soundflow(), *args], stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert (p.returncode, p.stderr.decode()) == (0, "")


# ----------------------------------------------------------------------------- CI
def test_ci_lints_then_runs_the_readmes_test_command():
    lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    readme = (ROOT / "README.md").read_text()
    command = "./scripts/setup-dev.sh && python -m pytest -q -n auto --dist loadgroup"
    assert command in readme
    assert lines[-1] == command
    assert lines.index("ruff check .") < lines.index("ruff format --check .") < len(lines) - 1
    setup = lines.index("./scripts/setup-dev.sh")  # ruff is in the dev extra it installs
    assert setup < lines.index("ruff check .")
    assert os.access(ROOT / ".ci" / "run", os.X_OK)


# ----------------------------------------------------------------------------- bench
def test_bench_soak_too_short_for_a_rate_reports_counts(tmp_path):
    out = tmp_path / "soak.json"
    args = ["bench", "soak", "--hours", "0.01", "--sample-every", "6", "--json", str(out)]
    r = CliRunner().invoke(cli, [*args, "--no-png"])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    for k in ("alert_first_window", "alert_last_window"):
        w = result[k]
        assert w["false_alerts_per_hour"] is None and isinstance(w["false_alerts"], int)
        assert (
            f"false_alerts={w['false_alerts']} in 18 s (too short for a per-hour rate" in r.output
        )
    assert "false_alerts_per_hour=" not in r.output
    assert "--hours 0.34 or more" in r.output


def test_bench_alerts_on_seconds_of_benign_audio_reports_counts(tmp_path):
    from soundflow.benchmarks import alerts as al

    if not sorted((al.WIDELANDS_DIR / "music").glob("*.ogg")):
        pytest.skip(f"widelands-data absent: run {al.SETUP}")
    out = tmp_path / "alerts.json"
    args = ["--benign-minutes", "0.1", "--event-streams", "0", "--deciders", "tagger"]
    r = CliRunner().invoke(cli, ["bench", "alerts", *args, "--json", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(out.read_text())["deciders"]
    b = row["benign"]
    assert (
        f"tagger    false alerts {b['false_alerts']} in 6 s  per label {b['false_by_label']} "
        "(too short for a per-hour rate: --benign-minutes 10 or more)"
    ) in r.stdout
    assert "/h" not in r.stdout


def test_bench_alerts_prints_progress_to_stderr(tmp_path, monkeypatch):
    import numpy as np

    from soundflow.train import heldout

    def streams(*_args):  # two short speechless streams instead of the Tux Paint set
        return [
            {"id": f"quiet-{i}", "samples": np.zeros(32_000, np.float32), "duration": 2.0}
            | {"events": []}
            for i in range(2)
        ]

    monkeypatch.setattr(heldout, "tuxpaint_sound_clips", lambda: [])
    monkeypatch.setattr(heldout, "sound_streams", streams)
    out = tmp_path / "alerts.json"
    r = CliRunner().invoke(cli, ["bench", "alerts", "--tuxpaint-sounds", "--json", str(out)])
    assert r.exit_code == 0, r.output
    progress = [line for line in r.stderr.splitlines() if ": stream " in line]
    result = json.loads(out.read_text())
    passes = len(result["table"]) + len(result["captions"])
    assert len(progress) == 2 * passes >= 4, r.stderr
    assert progress[0].startswith("alert mode (") and "stream 1/2, 0.0 of 0.1 min" in progress[0]
    assert ": stream " not in r.stdout  # stdout keeps the results alone


def test_bench_serve_starts_the_installed_package_not_a_clone_in_the_folder(tmp_path, monkeypatch):
    from soundflow.benchmarks.serve import _start_server

    clone = tmp_path / "soundflow" / "cli"  # `git clone .../soundflow` in the working folder
    clone.mkdir(parents=True)
    for pkg in (clone.parent, clone):  # regular packages: they shadow any install
        (pkg / "__init__.py").write_text("")
    (clone / "__main__.py").write_text("print('listening on ws://the-clone:1', flush=True)\n")
    monkeypatch.chdir(tmp_path)
    proc, url = _start_server(None, "off", 1, "cpu")
    try:
        assert url.startswith("ws://127.0.0.1:") and "the-clone" not in url
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_train_nproc_trains_the_installed_package_not_a_clone_in_the_folder(tmp_path):
    pytest.importorskip("torch")
    clone = tmp_path / "soundflow" / "cli"  # torchrun's workers run `python -m soundflow.cli`
    clone.mkdir(parents=True)
    for pkg in (clone.parent, clone):
        (pkg / "__init__.py").write_text("")
    (clone / "__main__.py").write_text("print('the clone ran', flush=True)\nraise SystemExit(3)\n")
    args = ["train", "--recipe", "smoke", "--nproc", "2", "--until", "1", "--out", "ck"]
    p = subprocess.run(
        [*_soundflow(), *args],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0 and "the clone ran" not in p.stdout + p.stderr, p.stderr[-2000:]
    assert "2 rank(s) (ddp)" in p.stdout
    assert (tmp_path / "ck" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- embed example
FAKE_SOUNDDEVICE = """
class PortAudioError(Exception):
    pass


class default:
    device = (-1, -1)


def query_hostapis():
    return []


def query_devices(device=None, kind=None):
    if device is None and kind is None:
        return []
    raise PortAudioError(f"Error querying device {-1 if device is None else device}")
"""


def test_embed_example_without_a_microphone_names_the_python_parameter(tmp_path):
    (tmp_path / "sounddevice.py").write_text(FAKE_SOUNDDEVICE)  # PortAudio with no inputs
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedding.py"), "--seconds", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode != 0
    (line,) = [x for x in p.stderr.splitlines() if "no usable" in x]
    assert "no usable default input device" in line and "device None" not in line
    assert "in Python: device=INDEX or NAME" in line
    r = subprocess.run(
        [*_soundflow(), "listen", "--device", "7"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no usable input device 7" in r.stderr and "pass --device INDEX or NAME" in r.stderr


def test_listen_in_process_gives_the_signal_handlers_back():
    import signal

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for args in (["listen", "--help"], ["listen", "--input", "/no/such/file.wav"]):
        CliRunner().invoke(cli, args)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
