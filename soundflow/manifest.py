"""The bundle contract: what export writes and the runtime reads (`manifest.json`).

Pure stdlib so the torch-free runtime and the exporter share one reader and one checker.
Every path in a manifest stays inside its bundle: checked before any file is opened.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BUNDLE_FORMAT = "soundflow-bundle"
# Bump on any change a runtime of the previous version would misread.
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 64 << 20  # a manifest is a few kB; more is not a manifest
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(RuntimeError):
    """A bundle the runtime must refuse; the message names the file and the fix."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Symbolic dims are strings ("batch", "query_len")."""

    name: str
    dtype: str  # numpy dtype name: "float32" or "int64"
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(name=d["name"], dtype=d["dtype"], shape=tuple(d["shape"]))


@dataclass(frozen=True)
class StateSpec:
    """A carried tensor: fed as `input`, returned as `output`, fed back next call."""

    input: str
    output: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StateSpec:
        return cls(d["input"], d["output"], d["dtype"], tuple(d["shape"]))


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file in the bundle (except the manifest) and write manifest.json."""
    bundle_dir = Path(bundle_dir)
    files = sorted(p for p in bundle_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    manifest = dict(manifest)
    manifest["format"] = BUNDLE_FORMAT
    manifest["version"] = MANIFEST_VERSION
    manifest["files"] = {
        p.relative_to(bundle_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in files
    }
    out = bundle_dir / MANIFEST_NAME
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(out)
    return out


def confined(bundle_dir: Path, rel: object, where: str) -> Path:
    """`bundle_dir / rel`, resolved, if `rel` is a relative path that stays inside the
    bundle (no `..`, no absolute path, no symlink out); BundleError naming `where` if not.
    Nothing is opened: only names and links are resolved."""
    fix = "a bundle lists only its own files; re-run `soundflow export`"
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise BundleError(f"{where}: {rel!r} is not a file name; {fix}")
    parts = rel.replace("\\", "/").split("/")
    if rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
        raise BundleError(f"{where}: {rel!r} points outside the bundle directory; {fix}")
    root = Path(bundle_dir).resolve()
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise BundleError(f"{where}: {rel!r} cannot be resolved ({e}); {fix}") from None
    if target != root and root not in target.parents:
        raise BundleError(
            f"{where}: {rel!r} is a link to {target}, outside the bundle directory; copy the "
            "file into the bundle instead of linking it"
        )
    return target


def read_manifest(bundle_dir: Path | str, verify_hashes: bool = True) -> dict[str, Any]:
    """Load and check a bundle's manifest; raise BundleError naming the file and the fix."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.is_dir():
        raise BundleError(
            f"bundle directory {bundle_dir} does not exist; pass --bundle DIR of a bundle "
            "written by `soundflow export`, or omit it to use the embedded default"
        )
    if not path.is_file():
        raise BundleError(
            f"{path} is missing: {bundle_dir} is not a soundflow bundle; "
            "re-run `soundflow export CHECKPOINT --out DIR`"
        )
    real = confined(bundle_dir, MANIFEST_NAME, str(path))
    if real.stat().st_size > MANIFEST_MAX_BYTES:
        raise BundleError(f"{path} is over 64 MB, not a manifest; re-run `soundflow export`")
    try:
        manifest = json.loads(real.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError, too deep
        raise BundleError(
            f"{path} is not valid JSON ({str(e)[:200]}); the bundle is corrupt, re-run "
            "`soundflow export`"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{path} is not a soundflow bundle manifest (format != {BUNDLE_FORMAT!r})"
        )
    version = manifest.get("version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise BundleError(
            f"{path} has bundle version {version!r}, this soundflow reads version "
            f"{MANIFEST_VERSION}; re-export the checkpoint with this soundflow, or install "
            "the soundflow version that wrote it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{path} lists no files; re-run `soundflow export`")
    # Every name first, so a hostile entry is refused before any listed file is opened.
    resolved = {}
    for rel, meta in files.items():
        where = f"{path}: files[{rel!r}]"
        resolved[rel] = confined(bundle_dir, rel, where)
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("sha256"), str)
            or not _SHA256.fullmatch(meta["sha256"])
            or not isinstance(meta.get("bytes"), int)
            or isinstance(meta.get("bytes"), bool)
            or meta["bytes"] < 0
        ):
            raise BundleError(
                f'{where} must be {{"sha256": 64 hex digits, "bytes": a size}}, got '
                f"{str(meta)[:80]}; re-run `soundflow export`"
            )
    for rel, meta in files.items():
        f = bundle_dir / rel
        real = resolved[rel]
        if not real.is_file():
            raise BundleError(
                f"{f} is listed in {MANIFEST_NAME} but missing; re-run `soundflow export`"
            )
        if real.stat().st_size != meta["bytes"]:
            raise BundleError(
                f"{f} has {real.stat().st_size} bytes, the manifest says {meta['bytes']}: the "
                "file is truncated or replaced; copy the bundle again or re-run `soundflow export`"
            )
        if verify_hashes and sha256_file(real) != meta["sha256"]:
            raise BundleError(
                f"{f} does not match its sha256 in {MANIFEST_NAME}: the file is corrupt or was "
                "edited; copy the bundle again or re-run `soundflow export`"
            )
    return manifest
