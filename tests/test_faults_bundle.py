"""Hostile and malformed bundles: every one is refused with a one-line BundleError before
anything outside the bundle directory is opened (an audit hook records what is opened)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from click.testing import CliRunner

from soundflow.cli.main import cli
from soundflow.manifest import BundleError, write_manifest
from soundflow.runtime.bundle import default_bundle_dir
from soundflow.runtime.engine import OrtEngine
from soundflow.runtime.kinds import open_engine

_opened: list[str] | None = None  # paths opened while a test records (audit hooks stay)


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A copy of the embedded default bundle; cases hard-link its files (no copying)."""
    out = tmp_path_factory.mktemp("base") / "bundle"
    shutil.copytree(default_bundle_dir(), out)
    return out


def _clone(base: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in base.iterdir():
        os.link(f, dest / f.name)  # a hard link is a regular file inside the bundle
    (dest / "manifest.json").unlink()  # edited copies must not write through the link
    shutil.copy(base / "manifest.json", dest / "manifest.json")
    return dest


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write(d: Path, m) -> None:
    (d / "manifest.json").write_text(m if isinstance(m, str) else json.dumps(m))


def _first_task(m: dict) -> str:
    return next(iter(m["tasks"]))


def _set(path: str, value):
    """A mutation that sets a dotted field (created if missing)."""

    def f(m: dict, d: Path):
        cur = m
        *head, last = path.split(".")
        for k in head:
            cur = cur[k]
        cur[last] = value(m) if callable(value) else value

    return f


def _outside_link(m: dict, d: Path):
    """encoder.onnx becomes a symlink to a file outside, hashes rewritten to match."""
    outside = d.parent / f"{d.name}_outside.onnx"
    shutil.copy(d / "encoder.onnx", outside)
    (d / "encoder.onnx").unlink()
    (d / "encoder.onnx").symlink_to(outside)
    write_manifest(d, {k: v for k, v in m.items() if k != "files"})
    return "skip-write"


def _manifest_link(m: dict, d: Path):
    outside = d.parent / f"{d.name}_manifest.json"
    outside.write_text(json.dumps(m))
    (d / "manifest.json").unlink()
    (d / "manifest.json").symlink_to(outside)
    return "skip-write"


def _drop(path: str):
    def f(m: dict, d: Path):
        cur = m
        *head, last = path.split(".")
        for k in head:
            cur = cur[k]
        del cur[last]

    return f


def _file_entry(name: str):
    def f(m: dict, d: Path):
        m["files"][name] = {"sha256": "0" * 64, "bytes": 1}

    return f


CASES = {
    "files: ../ to /etc/passwd": (_file_entry("../../../../etc/passwd"), "outside"),
    "files: absolute /etc/shadow": (_file_entry("/etc/shadow"), "outside"),
    "files: a symlink out": (_outside_link, "outside the bundle"),
    "manifest.json is a symlink out": (_manifest_link, "outside the bundle"),
    "encoder.file ../": (_set("encoder.file", "../encoder.onnx"), "outside"),
    "tokenizer.file absolute": (_set("tokenizer.file", "/etc/passwd"), "outside"),
    "encoder.file not listed": (_set("encoder.file", "manifest.json"), "does not list"),
    "files value a string": (lambda m, d: m["files"].update({"encoder.onnx": "abc"}), "sha256"),
    "files sha256 not hex": (
        lambda m, d: m["files"]["encoder.onnx"].update(sha256="zz" * 32),
        "sha256",
    ),
    "files bytes negative": (lambda m, d: m["files"]["encoder.onnx"].update(bytes=-5), "sha256"),
    "sample_rate a string": (_set("audio.sample_rate", "16000"), "audio.sample_rate"),
    "sample_rate 44100": (_set("audio.sample_rate", 44100), "audio.sample_rate"),
    "chunk_samples negative": (_set("audio.chunk_samples", -6400), "audio.chunk_samples"),
    "chunk_ms zero": (_set("audio.chunk_ms", 0), "audio.chunk_ms"),
    "cache_capacity 10**9": (_set("decoder.cache_capacity", 10**9), "GiB"),
    "num_layers 1000": (_set("decoder.num_layers", 1000), "decoder.num_layers"),
    "num_layers 1.5": (_set("decoder.num_layers", 1.5), "decoder.num_layers"),
    "head_dim a boolean": (_set("decoder.head_dim", True), "decoder.head_dim"),
    "vocab_size null": (_set("decoder.vocab_size", None), "decoder.vocab_size"),
    "decoder missing": (_drop("decoder"), "decoder"),
    "encoder.inputs an object": (_set("encoder.inputs", {"audio": 1}), "encoder.inputs"),
    "negative shape": (
        lambda m, d: m["encoder"]["inputs"][0].update(shape=["batch", -1]),
        "encoder.inputs[0].shape",
    ),
    "state of an unknown input": (
        lambda m, d: m["encoder"]["state"][0].update(input="nope"),
        "encoder.state[0].input",
    ),
    "state dtype complex": (
        lambda m, d: m["encoder"]["state"][0].update(dtype="complex128"),
        "encoder.state[0].dtype",
    ),
    "state 10**9 frames": (
        lambda m, d: m["encoder"]["state"][0].update(shape=[10**9, 10**6]),
        "GiB",
    ),
    "tasks a list": (_set("tasks", ["alert"]), "tasks"),
    "tasks empty": (_set("tasks", {}), "tasks"),
    "prompt id outside the vocabulary": (
        lambda m, d: m["tasks"][_first_task(m)].update(prompt_ids=[2, 10**9]),
        "prompt_ids",
    ),
    "prompt ids a string": (
        lambda m, d: m["tasks"][_first_task(m)].update(prompt_ids="2,7"),
        "prompt_ids",
    ),
    "threshold 2": (_set("decision.threshold", 2.0), "decision.threshold"),
    "threshold NaN": (_set("decision.threshold", math.nan), "decision.threshold"),
    "max_response_tokens 0": (_set("decision.max_response_tokens", 0), "max_response_tokens"),
    "calibrated thresholds a list": (_set("decision.thresholds", [0.5]), "decision.thresholds"),
    "no_repeat_ngram -1": (_set("decision.no_repeat_ngram", -1), "decision.no_repeat_ngram"),
    "opens_with unknown kind": (
        _set("decision.opens_with", {"alert": "siren"}),
        "decision.opens_with.alert",
    ),
    "control id -1": (_set("control_ids.eos", -1), "control_ids.eos"),
    "special token a string": (
        lambda m, d: m["special_tokens"].update({"<x>": "seven"}),
        "special_tokens",
    ),
    "variant path ../": (
        _set("variants", {"int8": {"encoder": "../e", "decoder": "d"}}),
        "outside",
    ),
    "mask_value a string": (_set("decoder.mask_value", "big"), "decoder.mask_value"),
    "fallback seconds a string": (
        _set("control", {"mode": "native", "fallback": {"end_silence_s": "soon"}}),
        "control.fallback.end_silence_s",
    ),
    "version a string": (_set("version", "1"), "version"),
    "a JSON list": (lambda m, d: "[1, 2, 3]", "not a soundflow bundle"),
    "nested 100000 deep": (lambda m, d: "[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "a 5000-digit number": (lambda m, d: '{"version": ' + "9" * 5000 + "}", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_bundle_is_one_line_bundle_error(base, tmp_path, case):
    mutate, needle = CASES[case]
    d = _clone(base, tmp_path / "b")
    m = _manifest(d)
    out = mutate(m, d)
    if out != "skip-write":
        _write(d, out if isinstance(out, str) else m)
    with pytest.raises(BundleError) as err:
        open_engine(d)
    msg = str(err.value)
    assert "\n" not in msg and needle in msg, msg
    assert len(msg) < 400, msg


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


def test_cli_reports_a_hostile_bundle_in_one_line(base, tmp_path):
    d = _clone(base, tmp_path / "b")
    m = _manifest(d)
    _file_entry("../../../../etc/passwd")(m, d)
    _write(d, m)
    r = CliRunner().invoke(cli, ["listen", "--bundle", str(d), "--demo", "--fast"])
    assert r.exit_code == 1 and "Traceback" not in r.output + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "outside the bundle" in errors[0]


def _recording(fn):
    """Run fn() and return (its result or exception, the paths opened meanwhile, resolved)
    with the paths ONNX Runtime was asked to open."""
    global _opened
    sessions: list[str] = []
    real = ort.InferenceSession

    def spy(path, *a, **k):
        sessions.append(os.fsdecode(path))
        return real(path, *a, **k)

    ort.InferenceSession = spy
    _opened = []
    try:
        try:
            result = fn()
        except BundleError as e:
            result = e
        opened = _opened
    finally:
        _opened = None
        ort.InferenceSession = real
    return result, [Path(p).resolve() for p in opened + sessions]


def _python_files(p: Path) -> bool:
    """Modules a lazy import opens are not the bundle's business."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    return p.suffix in (".py", ".pyc", ".so") or any(r in p.parents for r in roots)


def test_no_file_outside_the_bundle_is_opened(base, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for bundles")
    # A hostile manifest naming the secret every way it can: by `..`, absolute, by a link.
    for k, rel in enumerate(("../secret.txt", str(secret), "link.txt")):
        target = _clone(base, tmp_path / f"hostile{k}")
        if rel == "link.txt":
            (target / "link.txt").symlink_to(secret)
        m = _manifest(target)
        m["files"][rel] = {"sha256": "0" * 64, "bytes": secret.stat().st_size}
        _write(target, m)
        result, opened = _recording(lambda t=target: open_engine(t))
        assert isinstance(result, BundleError), rel
        assert secret.resolve() not in opened, (rel, opened)
    # A good bundle: everything the loader opens lies inside it.
    good = _clone(base, tmp_path / "good")
    result, opened = _recording(lambda: open_engine(good))
    assert isinstance(result, OrtEngine)
    root = good.resolve()
    outside = [p for p in opened if root not in p.parents and not _python_files(p)]
    assert not outside, outside
    assert any(p.name == "manifest.json" for p in opened)
    assert any(p.suffix == ".onnx" for p in opened)  # the graphs went through the spy
