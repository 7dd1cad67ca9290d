"""The package layers of ARCHITECTURE.md, checked on the source: every `import` statement
(module level or inside a function) of every module, walked with `ast`.

    soundflow (core, stdlib) <- runtime <- train <- export <- benchmarks <- cli

A module may import its own layer and the layers below it, never one above; so the
top-level packages have no import cycle. The one exception is `soundflow/__init__.py`,
the package facade: its lazy `soundflow.Listener` attribute names the runtime's class
(resolved on first use, never at `import soundflow`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# folder -> (import name, layer rank); lower ranks are imported by higher ones only
LAYERS = {
    "soundflow": ("soundflow", 0),
    "runtime": ("soundflow.runtime", 1),
    "train": ("soundflow.train", 2),
    "export": ("soundflow.export", 3),
    "benchmarks": ("soundflow.benchmarks", 4),
    "cli": ("soundflow.cli", 5),
}
FACADE = ROOT / "soundflow" / "__init__.py"
# Third-party packages a layer must never import (the runtime ships without torch).
FORBIDDEN = {
    "soundflow": {"numpy", "onnxruntime", "torch", "transformers", "onnx"},
    "runtime": {"torch", "transformers", "onnx", "tokenizers", "safetensors"},
}  # noqa


def layer_of(module: str) -> str | None:
    """The folder whose package holds `module` (the longest matching import name)."""
    best = None
    for folder, (name, _) in LAYERS.items():
        if module == name or module.startswith(name + "."):
            if best is None or len(name) > len(LAYERS[best][0]):
                best = folder
    return best


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, lazy ones included."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the file's own package
                base = path.parents[node.level - 1].relative_to(ROOT).parts
                pkg = ".".join([LAYERS[base[0]][0], *base[1:]])
                out.append((node.lineno, f"{pkg}.{node.module}" if node.module else pkg))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def sources(folder: str) -> list[Path]:
    base = ROOT / folder
    files = sorted(base.rglob("*.py"))
    return [f for f in files if "assets" not in f.parts]


def check_file(folder: str, path: Path, rel: str) -> list[str]:
    """The layer rule for one file of `folder`."""
    bad = []
    for line, mod in imports(path):
        top = mod.split(".")[0]
        if top in FORBIDDEN.get(folder, ()):
            bad.append(f"{rel}:{line}: {folder}/ may not import {top}")
        target = layer_of(mod)
        if target is not None and path != FACADE and LAYERS[target][1] > LAYERS[folder][1]:
            bad.append(f"{rel}:{line}: {folder}/ imports {mod} from the layer above ({target}/)")
    return bad


def violations() -> list[str]:
    return [
        v
        for folder in LAYERS
        for path in sources(folder)
        for v in check_file(folder, path, str(path.relative_to(ROOT)))
    ]


def test_every_layer_imports_downward_only():
    bad = violations()
    assert not bad, "upward imports (ARCHITECTURE.md, Layers):\n" + "\n".join(bad)


def test_no_cycle_among_top_level_packages():
    edges: dict[str, set[str]] = {f: set() for f in LAYERS}
    for folder in LAYERS:
        for path in sources(folder):
            if path == FACADE:
                continue
            for _, mod in imports(path):
                target = layer_of(mod)
                if target and target != folder:
                    edges[folder].add(target)

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in edges[a])

    cycles = [(a, b) for a in edges for b in edges[a] if reaches(b, a, {b})]
    assert not cycles, f"import cycles between top-level packages: {cycles}"


def test_the_walker_sees_lazy_and_upward_imports(tmp_path):
    """The check itself can fail: a lazy upward import inside a runtime function is reported,
    and relative imports resolve to their package."""
    f = tmp_path / "probe.py"
    f.write_text("def f():\n    from soundflow.export.specs import MASK_VALUE\n    import torch\n")
    assert (2, "soundflow.export.specs") in imports(f)
    bad = check_file("runtime", f, "runtime/probe.py")
    assert any("probe.py:2: runtime/ imports soundflow.export.specs" in v for v in bad), bad
    assert any("probe.py:3: runtime/ may not import torch" in v for v in bad), bad
    assert check_file("export", f, "export/probe.py") == []
    shards = ROOT / "train" / "data" / "shards.py"  # `from . import x` resolves to its package
    assert any(m.startswith("soundflow.train.data.") for _, m in imports(shards))
    assert layer_of("soundflow.train.hf_audio.encoder") == "train"
    assert layer_of("soundflow.manifest") == "soundflow"


@pytest.mark.parametrize("folder", ["train", "export"])
def test_torch_model_code_lives_under_train(folder):
    """nn.Module subclasses: the models under train/; export/ only wraps them in the exported
    graph signatures (export/graphs.py, export/whisper_export.py)."""
    allowed = {"export": {"graphs.py", "whisper_export.py"}, "train": None}[folder]
    for path in sources(folder):
        tree = ast.parse(path.read_text())
        modules = [
            n.name
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef)
            and any(ast.unparse(b).endswith(("nn.Module", "Module")) for b in n.bases)
        ]
        if modules and allowed is not None:
            assert path.name in allowed, f"{path.relative_to(ROOT)} defines torch modules {modules}"
