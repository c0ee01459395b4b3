"""Old import paths of modules that moved into the layer packages keep working, with a ``DeprecationWarning``.

``import mapo.token_stats`` (or ``from mapo import token_stats``) returns the very module object now at
``mapo.modality.token_stats``, so attribute reads and monkeypatches reach the real code. The finder is consulted
only after the normal ones failed, i.e. only for paths that no longer exist as files. The aliases go away in 0.3.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

#: old module path -> new module path (0.1 layout -> layer packages).
MOVED_MODULES: dict[str, str] = {
    "mapo._checks": "mapo.objective._checks",
    "mapo.worked_example": "mapo.objective.worked_example",
    "mapo.decoder": "mapo.modality.decoder",
    "mapo.token_stats": "mapo.modality.token_stats",
    "mapo.trainer.model_loading": "mapo.modality.loading",
    "mapo.attention_hook": "mapo.probe.attention_hook",
    "mapo.attention_mass": "mapo.probe.reductions",
    "mapo.naive_attention": "mapo.probe.naive",
    "mapo.diagnostics.key_attention": "mapo.probe.key_attention",
    "mapo.train_cli": "mapo.trainer.cli",
    "mapo.diagnostics.probes": "mapo.diagnostics.linear_probes",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new_name}; import from {self.new_name} (or its package) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its new name already."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        new_name = MOVED_MODULES.get(fullname)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


def install() -> None:
    """Append the finder to ``sys.meta_path`` once (idempotent across reloads of :mod:`mapo`)."""
    if not any(type(f).__name__ == _MovedModuleFinder.__name__ for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
