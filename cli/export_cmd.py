"""`soundflow export`: checkpoint -> ONNX bundle, and the parity check of a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option(
    "--check",
    "check_bundle",
    type=click.Path(path_type=Path),
    help="Check an existing bundle against --checkpoint instead of exporting.",
)
@click.option(
    "--checkpoint",
    "check_ckpt",
    type=click.Path(path_type=Path),
    help="The checkpoint a --check compares against.",
)
@click.option(
    "--cache-capacity",
    type=int,
    default=None,
    help="Decoder KV-cache slots the runtime preallocates "
    "[default: the longest sequence the checkpoint was trained on].",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Also write int8 graphs (ONNX Runtime dynamic quantization); for Whisper-based "
    "checkpoints, store the graphs' weights as int8 instead (4x smaller, fp32 arithmetic).",
)
@click.option(
    "--tensorrt", is_flag=True, help="Also build TensorRT plans (needs tensorrt and a GPU)."
)
@click.option(
    "--dynamic-encoder",
    is_flag=True,
    help="Whisper-based checkpoints: after the parity check, give the encoder int8 MatMuls "
    "(ONNX Runtime dynamic quantization), about half its CPU time; the change is reported.",
)
@click.option(
    "--int8-logits",
    is_flag=True,
    help="Whisper-based checkpoints: after the parity check, give the decoder an int8 way to "
    "its logits projection (per-row scales), which transcribe captions' window readings take: "
    "about half a step's CPU time; decisions keep fp32. The change is reported.",
)
@click.option(
    "--int8-decoder",
    is_flag=True,
    help="Whisper-based checkpoints: after the parity check, give the decoder's layers 8-bit "
    "matmuls (ONNX Runtime MatMulNBits, activations quantized per row): a one-token step "
    "takes about a third of the time on CPU. The change is reported.",
)
@click.option("--no-check", is_flag=True, help="Skip the parity check after exporting.")
def export(
    checkpoint,
    out,
    check_bundle,
    check_ckpt,
    cache_capacity,
    int8,
    tensorrt,
    dynamic_encoder,
    int8_logits,
    int8_decoder,
    no_check,
):
    """Export a checkpoint to an ONNX bundle, then check its parity with torch.

    \b
    CHECKPOINT is a soundflow checkpoint, or a local Qwen2-Audio / Qwen2.5-Omni directory
    as `save_pretrained` wrote it (exported to the same bundle format).

    \b
    Examples:
      soundflow export /tmp/ck --out /tmp/bundle
      soundflow export ~/models/Qwen2.5-Omni-3B --out /tmp/omni
      soundflow export --check /tmp/bundle --checkpoint /tmp/ck
    The check streams 30 chunks with real generation through torch and ONNX Runtime and
    prints the largest logit difference as its last line.
    """
    try:
        from soundflow.export.parity import check, format_report
        from soundflow.manifest import BundleError
        from soundflow.train.checkpoint import CheckpointError
    except ImportError as e:
        raise click.ClickException(
            f"export needs the train extra ({e.name} is missing): pip install 'soundflow[train]'"
        ) from None
    try:
        if check_bundle:
            if not check_ckpt:
                raise click.UsageError("--check needs --checkpoint CHECKPOINT to compare against")
            if _hf_architecture(check_ckpt):
                _run_hf_check(check_bundle, check_ckpt)
            else:  # either kind: the bundle's manifest says which (export/parity.py)
                _run_check(check, format_report, check_bundle, check_ckpt)
            return
        if not checkpoint or not out:
            raise click.UsageError(
                "give a CHECKPOINT and --out BUNDLE (or --check BUNDLE --checkpoint CK)"
            )
        from soundflow.export.onnx_export import export_bundle
        from soundflow.export.quantize import add_int8, add_tensorrt
        from soundflow.train.kinds.whisper.model import is_whisper_checkpoint

        if is_whisper_checkpoint(checkpoint):  # the cross-attention kind (Contract 3b)
            _export_whisper(
                checkpoint, out, int8, no_check, dynamic_encoder, int8_logits, int8_decoder
            )
            return
        arch = _hf_architecture(checkpoint)
        if arch:  # a pretrained audio LLM (Qwen2-Audio, Qwen2.5-Omni): ARCHITECTURE.md 3b
            from soundflow.export.hf_audio import export_hf_bundle

            click.echo(f"{checkpoint}: {arch} checkpoint")
            capacity = {"cache_capacity": cache_capacity} if cache_capacity else {}
            export_hf_bundle(checkpoint, out, log=click.echo, **capacity)
        else:
            export_bundle(checkpoint, out, cache_capacity=cache_capacity, log=click.echo)
        if tensorrt:
            try:
                add_tensorrt(out, log=click.echo)
            except RuntimeError as e:
                raise click.ClickException(str(e)) from None
        if int8:
            add_int8(out, log=click.echo)
        if not no_check and arch:
            _run_hf_check(out, checkpoint)
        elif not no_check:
            _run_check(check, format_report, out, checkpoint)
    except (BundleError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None


def _hf_architecture(checkpoint: Path) -> str | None:
    from soundflow.export.hf_audio import detect

    return detect(checkpoint) if checkpoint and Path(checkpoint).is_dir() else None


def _run_hf_check(bundle: Path, checkpoint: Path) -> None:
    from soundflow.export.hf_audio import parity

    report = parity.check(bundle, checkpoint)
    click.echo(json.dumps(report, indent=2, default=str))
    click.echo(parity.summary_line(report))
    if not report["ok"]:
        raise SystemExit(1)


def _run_check(check, format_report, bundle: Path, checkpoint: Path) -> None:
    report = check(bundle, checkpoint)
    click.echo(format_report(report))  # the JSON report, its summary line last
    if not report["ok"]:
        raise SystemExit(1)


def _export_whisper(
    checkpoint: Path,
    out: Path,
    int8: bool,
    no_check: bool,
    dynamic_encoder: bool = False,
    int8_logits: bool = False,
    int8_decoder: bool = False,
) -> None:
    """Whisper-based checkpoints: `--int8` stores the graphs' weights as int8 (the embedded
    default is exported so, to stay under 50 MB); the arithmetic stays fp32, except the
    encoder's MatMuls with `--dynamic-encoder`, the decoder's logits with `--int8-logits` and
    its layers with `--int8-decoder` (applied after the parity check, which is against torch
    in fp32)."""
    from soundflow.export.whisper_export import export_whisper_bundle

    export_whisper_bundle(checkpoint, out, int8=int8, log=click.echo)
    if not no_check:
        from soundflow.export.parity import check, format_report

        _run_check(check, format_report, out, checkpoint)
    if dynamic_encoder:
        from soundflow.export.quantize import dynamic_encoder as rewrite

        rewrite(out, log=click.echo)
    if int8_logits:
        from soundflow.export.quantize import int8_logits as rewrite_logits

        rewrite_logits(out, log=click.echo)
    if int8_decoder:
        from soundflow.export.decoder_int8 import int8_decoder as rewrite_layers

        rewrite_layers(out, log=click.echo)
