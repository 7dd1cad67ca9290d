"""A trained alert tagger (train/tagger.py) -> `tagger.onnx` and the manifest's `tagger`
section (ARCHITECTURE.md, Contract 3d), added to a copy of the bundle it was trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch

from soundflow import protocol
from soundflow.export.onnx_export import OPSET, declare
from soundflow.manifest import TensorSpec, read_manifest, write_manifest
from soundflow.train.tagger import TaggerHead

FILE = "tagger.onnx"
# Benign package clips are drawn this many times as often as a stream chunk: they are few
# (~4,700 chunks from seven packages) beside ~64,000 stream chunks, and varied.
NEGATIVE_REPEAT = 3


def tagger_io(head: TaggerHead) -> tuple[list[TensorSpec], list[TensorSpec]]:
    c = head.config
    return (
        [TensorSpec(protocol.TAGGER_FRAMES, "float32", ("batch", c.frames, c.width))],
        [TensorSpec(protocol.TAGGER_PROBS, "float32", ("batch", len(c.labels)))],
    )


def export_graph(head: TaggerHead, path: Path) -> None:
    """The head as an ONNX graph with a dynamic batch axis and its constants as metadata."""
    c = head.config
    inputs, outputs = tagger_io(head)
    example = torch.zeros(1, c.frames, c.width)
    with torch.no_grad():
        torch.onnx.export(
            head.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[inputs[0].name],
            output_names=[outputs[0].name],
            dynamic_axes={inputs[0].name: {0: "batch"}, outputs[0].name: {0: "batch"}},
        )
    m = onnx.load(str(path))
    declare(m, outputs, {"kind": "soundflow-tagger", "source": c.source, "labels": c.labels})
    onnx.save(m, str(path))


def add_tagger(
    bundle: Path,
    out: Path,
    head: TaggerHead,
    thresholds: dict[str, float],
    captions: dict[str, str],
    tokenizer_encode,
    patience: int,
    report: dict,
    speech: dict | None = None,
    verify: dict | None = None,
) -> dict:
    """Copy `bundle` to `out` with the tagger added; returns the new manifest.
    `tokenizer_encode(text) -> ids`: the bundle's tokenizer, for each alert's response text.
    `speech`: the speech gate's calibration (train/tagger.calibrate_gate), where it has one.
    `verify`: {label: {"threshold", "words"}}, labels also raised when a reading confirms."""
    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    if manifest.get("decoder", {}).get("kind") != "whisper-cross":
        raise ValueError(f"{bundle}: a tagger reads a whisper-cross bundle's encoder frames")
    if out.resolve() != bundle.resolve():
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(bundle, out)
    export_graph(head, out / FILE)
    c = head.config
    inputs, outputs = tagger_io(head)
    manifest = {k: v for k, v in manifest.items() if k not in ("format", "version", "files")}
    manifest["tagger"] = {
        "file": FILE,
        "inputs": [s.to_json() for s in inputs],
        "outputs": [s.to_json() for s in outputs],
        "source": c.source,
        "frames": c.frames,
        "labels": list(c.labels),
        "patience": patience,
        "alerts": {
            label: {
                "threshold": round(float(thresholds[label]), 4),
                "caption": captions[label],
                "response_ids": [int(i) for i in tokenizer_encode(" " + captions[label])],
            }
            for label in c.alerts
        },
        "calibration": report,
    }
    if c.speech:
        manifest["tagger"]["speech"] = {"label": c.labels[-1], **(speech or {})}
    if verify:
        manifest["tagger"]["verify"] = verify
    write_manifest(out, manifest)
    return manifest


def check_parity(head: TaggerHead, path: Path, seed: int = 0) -> float:
    """Max |torch - ONNX Runtime| over random frames: the exported graph is the head."""
    import onnxruntime as ort

    c = head.config
    x = np.random.default_rng(seed).standard_normal((3, c.frames, c.width)).astype(np.float32)
    with torch.no_grad():
        want = head(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([protocol.TAGGER_PROBS], {protocol.TAGGER_FRAMES: x})[0]
    return float(np.abs(got - want).max())


def load_captions(records) -> dict[str, str]:
    """Each alert label's most frequent response text in the streams' alert targets."""
    from collections import Counter

    counts: dict[str, Counter] = {}
    for rec in records:
        for target in rec["targets"].get("alert", []):
            tags, plain = protocol.parse_tags(target["text"])
            if "alert" in tags and plain:
                counts.setdefault(tags["alert"], Counter())[plain] += 1
    return {label: c.most_common(1)[0][0] for label, c in counts.items()}


def window_readings(engine, dev: Path, streams, column: int, heard=None) -> list[dict]:
    """Per dev stream, {position: the words Whisper's transcription prompt reads in that
    chunk's window} for every chunk whose p(column) reaches T.VERIFY_FLOOR (a label's
    confirming readings, made offline as the runtime would make them); `heard` is added to."""
    from soundflow.runtime.kinds.whisper import CrossDecoderStream
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.train import tagger as T

    reader = CrossDecoderStream(
        engine, RuntimeOptions.from_flags(mode="transcribe", speech_gate=False)
    )
    hist = int(engine.spec.manifest["encoder"].get("history_samples", 0))
    cs, state = engine.spec.chunk_samples, engine.spec.encoder_state[0].input
    out = heard or [{} for _ in streams]
    for k, (record, chunks, probs) in enumerate(streams):
        todo = [j for j in np.flatnonzero(probs[:, column] >= T.VERIFY_FLOOR) if j not in out[k]]
        if not todo:
            continue
        x = T.load_stream(dev, record)
        for j in todo:  # the window as the stream would hold it: its PCM history and chunk
            s = int(chunks[j]) * cs
            entry, _ = engine.encode(x[s : s + cs][None], {state: x[max(0, s - hist) : s][None]})
            reader.memory.reset()
            reader.memory.add(entry)
            ids = reader.captions.hypothesis()
            out[k][int(j)] = {w.key for w in reader.captions.words(ids)}  # as the runtime
    return out


def build(
    bundle: Path,
    data: list[Path],
    dev: Path,
    out: Path,
    cache: Path,
    steps: int = 6000,
    every: int = 2,
    patience: int = 1,
    false_cost: float = 1.0,
    seed: int = 0,
    log=print,
    negatives: tuple[str, ...] = (),
    speech: bool = True,
    speech_recall: float | None = None,
    verify: dict[str, tuple[str, ...]] | None = None,
) -> dict:
    """`soundflow tagger`: features of `data` and `dev` through `bundle`'s encoder (cached
    under `cache`), a head trained on `data`, thresholds calibrated on `dev`, and `out`, a
    copy of `bundle` with the tagger; returns the dev report."""
    from tokenizers import Tokenizer

    from soundflow.runtime.kinds.whisper import CrossEngine
    from soundflow.runtime.options import RuntimeOptions
    from soundflow.runtime.tagger import VerifySpec
    from soundflow.train import tagger as T

    kind = read_manifest(bundle, verify_hashes=False).get("decoder", {}).get("kind")
    if kind != "whisper-cross":
        raise ValueError(
            f"{bundle}: a tagger reads a Whisper-based (whisper-cross) bundle's encoder "
            f"frames; this bundle's decoder is {kind or 'decoder-only'}"
        )
    clips = {pkg: T.package_files([pkg]) for pkg in negatives}  # fails fast if one is missing
    engine = CrossEngine(bundle, RuntimeOptions.from_flags(threads=1))
    digest = read_manifest(bundle, verify_hashes=False)["files"][engine.spec.encoder_file.name]
    cache = Path(cache) / digest["sha256"][:16]  # features belong to one encoder graph
    probe = T.TaggerConfig(labels=(), alerts=())
    train = []
    for d in data:
        log(f"features of {d} (one chunk in {every}, and every chunk near a sound event)")
        train += T.cached_features(engine, d, cache / Path(d).name, probe, every, log)
    log(f"features of {dev} (every chunk)")
    dev_streams = T.cached_features(engine, dev, cache / ("dev-" + Path(dev).name), probe, 1, log)
    alerts, sounds = T.label_sets([r for r, _, _ in train])
    gate = (T.SPEECH,) if speech else ()
    config = T.TaggerConfig(labels=alerts + sounds + gate, alerts=alerts, speech=speech)
    x = [f for _, _, f in train]
    y = [T.chunk_targets(r, c, config.sounds) for r, c, _ in train]
    said = np.concatenate([T.speech_targets(r, c) for r, c, _ in train])  # streams come first
    for pkg in negatives:  # benign clips of whole packages: every label off
        f = cache / f"negatives-{pkg}.npy"
        if not f.exists():
            log(f"features of {len(clips[pkg])} benign clips of {pkg}")
            np.save(f, T.clip_features(engine, clips[pkg], probe, seed))
        x += [np.load(f)] * NEGATIVE_REPEAT
        y += [np.zeros((len(x[-1]), len(config.sounds)), np.float32)] * NEGATIVE_REPEAT
    x, y = np.concatenate(x), np.concatenate(y)
    log(f"training the head: {len(x)} chunks, {len(alerts)} alert labels, {len(sounds)} others")
    # the package clips' speech is unknown (some hold voices): the gate learns from streams
    head = T.fit(config, x, y, steps, seed, log, (np.arange(len(said)), said))
    probs = [(r, c, T.predict(head, f)) for r, c, f in dev_streams]
    refractory = float(engine.spec.decision["refractory_s"])
    thr = T.calibrate(config, probs, patience, refractory, false_cost)
    verified, verify_specs, heard = {}, {}, None
    for label, words in (verify or {}).items():
        if label not in config.alerts:
            raise ValueError(f"--verify {label}: not one of the alert labels {config.alerts}")
        col = config.labels.index(label)
        log(f"window readings of the dev chunks where p({label}) >= {T.VERIFY_FLOOR}")
        heard = window_readings(engine, dev, probs, col, heard)
        g = T.calibrate_verify(
            config, probs, heard, thr, patience, refractory, false_cost, label, words
        )
        log(f"verify {label} by {list(words)}: threshold {g}")
        if g is not None:
            verified[label] = {"threshold": g, "words": list(words)}
            verify_specs[label] = VerifySpec(g, tuple(words))
    report = T.score(config, probs, thr, patience, refractory, verify_specs or None, heard)
    gate_report = None
    if speech:  # the chunks a window reading hears: the encoder's history and the chunk
        cs = engine.spec.chunk_samples
        window = -(-(int(engine.spec.manifest["encoder"].get("history_samples", 0)) + cs) // cs)
        gate_report = T.calibrate_gate(probs, window, speech_recall or T.SPEECH_RECALL)
        log(f"speech gate: {json.dumps(gate_report)}")
    report = {
        "dev": _split_name(dev),
        "hours": round(report["hours"], 3),
        "accuracy": round(report["accuracy"], 4),
        "false_per_hour": round(report["false_per_hour"], 2),
        "false_cost": false_cost,
        "steps": steps,
        "train": [_split_name(d) for d in data],
        "negatives": list(negatives),
        "verified": sorted(verified),
    }
    log(f"dev: alert accuracy {report['accuracy']:.1%}, {report['false_per_hour']:.1f} false/h")
    tok = Tokenizer.from_file(str(engine.spec.tokenizer_file))
    manifest = add_tagger(
        bundle,
        out,
        head,
        dict(zip(alerts, thr, strict=True)),
        load_captions([r for r, _, _ in train]),
        lambda text: tok.encode(text, add_special_tokens=False).ids,
        patience,
        report,
        gate_report,
        verified or None,
    )
    err = check_parity(head, Path(out) / FILE)
    if err > 1e-4:
        raise RuntimeError(f"{out / FILE} differs from the trained head by {err:.2e}")
    T.save(head, Path(out).parent / (Path(out).name + "-tagger.pt"), {"report": report})
    log(json.dumps(manifest["tagger"]["alerts"], indent=1)[:2000])
    return report


def _split_name(path) -> str:
    """A data split as the manifest records it: its last two folders (e.g. round2/default-s9),
    never the path it lay at on the machine that trained (a shipped file carries no host's
    paths)."""
    parts = Path(str(path)).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else str(path)
