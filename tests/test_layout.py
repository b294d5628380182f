"""The package's shape: dependencies run one way, and shared arguments are declared once.

Layers, lowest first: ``vapl.core`` <- ``vapl.vlm`` <- ``datamodules`` <- ``vapl.methods`` <-
``vapl.training`` <- ``vapl.results`` <- ``vapl.apps`` <- ``vapl.command``. A module may import
its own layer and lower ones, never a higher one (docs/architecture.md).
"""

from __future__ import annotations

import ast
import contextlib
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    "vapl.core",
    "vapl.vlm",
    "datamodules",
    "vapl.methods",
    "vapl.training",
    "vapl.results",
    "vapl.apps",
    "vapl.command",
]


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of a dotted module name, or None outside the project."""
    for index in reversed(range(len(LAYERS))):
        name = LAYERS[index]
        if module == name or module.startswith(name + "."):
            return index
    return None


def project_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a project module in a file, at any depth (function
    bodies included: a lazy import is still a dependency)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if layer_of(name) is not None]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_layer_of_names():
    assert layer_of("vapl.core.refine") == 0 and layer_of("datamodules.io.dicom") == 2
    assert layer_of("vapl.command") == 7 and layer_of("torch") is None
    assert layer_of("vapl") is None  # the package's own __init__ is no layer


def test_an_upward_import_is_found(tmp_path):
    """The check below can fail: a core-like file importing a method is reported."""
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from vapl.methods import VAPL\n")
    assert project_imports(source) == [(2, "vapl.methods")]


def test_no_module_imports_a_higher_layer():
    files = sorted((ROOT / "vapl").rglob("*.py")) + sorted((ROOT / "datamodules").rglob("*.py"))
    violations = []
    for path in files:
        own = layer_of(module_name(path))
        if own is None:
            continue
        for line, name in project_imports(path):
            if layer_of(name) > own:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not violations, "\n".join(violations)


OVERLAYS = ["methods/baseline.yaml", "methods/res_l.yaml", "methods/learning_to_look.yaml"]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "methods/vapl.yaml"])
def test_print_config_lists_the_base_arguments_with_their_defaults(overlay):
    """Leaf classes forward the shared arguments with ``**kwargs``; the CLI still resolves them."""
    import contextlib
    import io

    from vapl.training.cli import build_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--config", "demo.yaml", "--config", overlay, "--print_config"])
    printed = out.getvalue()
    init_args = printed[printed.index("model:") : printed.index("\ndata:")]
    for line in ("backbone: tiny", "backbone_weights: null", "weight_decay: 0.0", "lr: 0.001"):
        assert line in init_args, (overlay, line)
    assert "explanation_metrics: true" in init_args


def test_help_documents_the_shared_and_the_own_arguments():
    from vapl.training.cli import build_cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(["fit", "--model.help", "VAPL"])
    text = " ".join(out.getvalue().split())
    assert "masks drawn per prompted sample" in text  # n_masks, VAPL's own
    assert "Adam's learning rate" in text  # lr, shared by every method
