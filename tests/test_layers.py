"""The layer rule of the package, as a test: every import of every module under ``src/mapo`` points downward.

objective (pure torch) <- modality <- probe <- trainer (the only TRL user) <- cli; ``rewards``, ``pos_gate`` and
``data`` stand on their own; ``eval``, ``diagnostics`` and ``synthetic`` are consumers. The check reads the
imports of the source text (lazy imports inside functions included), then confirms the two loud cases by
importing in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import mapo
from mapo._moved import MOVED_MODULES

SRC = Path(mapo.__file__).resolve().parent

#: package -> the mapo packages it may import (besides itself). "cli" is ``mapo/cli.py``.
ALLOWED: dict[str, set[str]] = {
    "objective": set(),
    "modality": {"objective"},
    "probe": {"objective", "modality"},
    "pos_gate": set(),
    "rewards": set(),
    "data": {"rewards"},  # the gold answer of a training row is the accuracy reward's resolve_gold
    "trainer": {"objective", "modality", "probe", "pos_gate", "rewards", "data"},
    "eval": {"objective", "modality", "probe", "pos_gate", "rewards", "data"},
    "diagnostics": {"objective", "modality", "probe", "pos_gate", "rewards", "data", "eval"},
    # The demo trains with the library's real trainers; it still never imports TRL itself.
    "synthetic": {"objective", "modality", "probe", "pos_gate", "rewards", "data", "trainer"},
    "cli": {"trainer", "eval", "diagnostics", "synthetic", "objective"},
    "_moved": set(),
    "__init__": {"_moved"},
}
PRODUCT_PACKAGES = set(ALLOWED)  # everything but mapo/testing/ (test fixtures)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports; ``from X import n`` yields ``X`` and ``X.n`` (n may be a
    submodule)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            names.add(origin)
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _product_sources() -> list[Path]:
    return [p for p in _sources() if _package_of(p) in PRODUCT_PACKAGES]


def test_every_source_module_has_a_layer():
    unknown = sorted({_package_of(p) for p in _sources()} - PRODUCT_PACKAGES - {"testing"})
    assert not unknown, f"give these new top-level modules/packages a row in ALLOWED: {unknown}"


def test_mapo_imports_point_downward():
    wrong = []
    for path in _product_sources():
        own = _package_of(path)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] != "mapo" or len(parts) < 2:
                continue
            target = parts[1]
            if target in (own, "testing") or target not in PRODUCT_PACKAGES:
                continue  # testing: the next test; other names: attributes of mapo itself (__version__)
            if target not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(SRC.parent)} imports {name}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_objective_is_pure_torch():
    outside = []
    for path in _sources():
        if _package_of(path) != "objective":
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ("transformers", "trl", "peft", "datasets", "accelerate", "numpy"):
                outside.append(f"{path.relative_to(SRC.parent)} imports {name}")
    assert not outside, "\n".join(sorted(outside))


def test_only_the_trainer_imports_trl():
    leaks = [
        f"{path.relative_to(SRC.parent)} imports {name}"
        for path in _sources()
        if _package_of(path) != "trainer"
        for name in _imports(path)
        if name.split(".")[0] == "trl"
    ]
    assert not leaks, "\n".join(sorted(leaks))


def test_product_never_imports_the_test_fixtures():
    leaks = [
        f"{path.relative_to(SRC.parent)} imports {name}"
        for path in _product_sources()
        for name in _imports(path)
        if name == "mapo.testing" or name.startswith("mapo.testing.")
    ]
    assert not leaks, "\n".join(sorted(leaks))


def _fresh_import(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_consumers_load_without_trl_and_objective_without_transformers():
    """The import-time check of the issue: the modules eval / diagnose run never pull TRL in."""
    _fresh_import(
        "import sys\n"
        "import mapo.objective\n"
        "assert 'transformers' not in sys.modules and 'trl' not in sys.modules, 'objective pulled in transformers'\n"
        "for name in ('mapo.modality', 'mapo.probe', 'mapo.eval.runner', 'mapo.eval.cli', 'mapo.diagnostics.cli',\n"
        "             'mapo.diagnostics', 'mapo.synthetic'):\n"
        "    __import__(name)\n"
        "    assert 'trl' not in sys.modules, f'importing {name} imported trl'\n"
    )


@pytest.mark.parametrize(("old", "new"), sorted(MOVED_MODULES.items()))
def test_moved_module_paths_still_import(old, new):
    """The 0.1 module paths are aliases of the moved modules (same object), with a DeprecationWarning."""
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
