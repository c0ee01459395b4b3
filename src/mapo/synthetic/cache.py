"""On-disk cache of warmed-up tone-melody models, so a second ``mapo demo`` skips the warm-up.

One entry per (seed, warm-up budget, code version). The code version is a hash of the sources that decide the
warmed-up weights (task, model, batching, warm-up, the collapse window and the evaluation that drives it), the
torch version and the torch thread count: the warm-up is deterministic only for a fixed thread count
(floating-point summation order), so a cache written with another count must not be reused. Entries live under
``$MAPO_CACHE_DIR`` or the user cache dir (``$XDG_CACHE_HOME/mapo-rl/synthetic``, default
``~/.cache/mapo-rl/synthetic``); deleting the directory is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from .warmup import BUDGETS, WarmupBudget, WarmupReport, warm_up

__all__ = ["cache_dir", "code_version", "load_warm_model", "save_warm_model", "warm_model_key"]

_SOURCES = ("task.py", "model.py", "batching.py", "warmup.py", "collapse_window.py", "evaluate.py")


def cache_dir() -> Path:
    """``$MAPO_CACHE_DIR``, else ``$XDG_CACHE_HOME/mapo-rl/synthetic``, else ``~/.cache/mapo-rl/synthetic``."""
    if os.environ.get("MAPO_CACHE_DIR"):
        return Path(os.environ["MAPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mapo-rl" / "synthetic"


def code_version() -> str:
    """Hash of the warm-up's sources, the torch version and the torch thread count (12 hex digits)."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        h.update((here / name).read_bytes())
    h.update(f"torch={torch.__version__};threads={torch.get_num_threads()}".encode())
    return h.hexdigest()[:12]


def warm_model_key(seed: int, budget: WarmupBudget) -> str:
    """File stem of one cache entry: seed, a hash of the budget's fields, the code version."""
    b = hashlib.sha256(json.dumps(asdict(budget), sort_keys=True).encode()).hexdigest()[:8]
    return f"seed{seed}-budget{b}-code{code_version()}"


def load_warm_model(model: torch.nn.Module, seed: int, budget: WarmupBudget) -> WarmupReport | None:
    """Load a cached warm-up into ``model`` (in place) and return its report, or ``None`` on a miss.

    A corrupt or mismatching entry counts as a miss (and is overwritten by the next save), never as an error.
    """
    from safetensors.torch import load_model

    stem = cache_dir() / warm_model_key(seed, budget)
    weights, meta = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        report = WarmupReport(**json.loads(meta.read_text()))
        missing, unexpected = load_model(model, weights, strict=False)
    except Exception:  # noqa: BLE001 - any unreadable entry (truncated file, old layout) is a miss, not an error
        return None
    if missing or unexpected:
        return None
    return report


def save_warm_model(model: torch.nn.Module, seed: int, budget: WarmupBudget, report: WarmupReport) -> Path:
    """Write the warmed-up weights (safetensors) and the report; returns the weights' path (written atomically)."""
    from safetensors.torch import save_model

    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / warm_model_key(seed, budget)
    stem.with_suffix(".json").write_text(json.dumps(asdict(report)))
    tmp = stem.with_suffix(".tmp")
    save_model(model, str(tmp))
    os.replace(
        tmp, stem.with_suffix(".safetensors")
    )  # the weights appear last and whole: readers never see half
    return stem.with_suffix(".safetensors")


def warm_up_cached(
    model: torch.nn.Module,
    processor,
    task,
    budget: str,
    seed: int,
    use_cache: bool = True,
    progress: bool = False,
) -> tuple[WarmupReport, bool]:
    """Warm ``model`` up in place for (``seed``, the named ``budget``): from the cache when an entry exists, else by
    :func:`~mapo.synthetic.warmup.warm_up`, then saved (``use_cache=False`` neither reads nor writes the cache).

    Returns the report and whether it came from the cache.
    """
    report = load_warm_model(model, seed, BUDGETS[budget]) if use_cache else None
    if report is not None:
        return report, True
    report = warm_up(model, processor, task, budget=budget, seed=seed, progress=progress)
    if use_cache:
        save_warm_model(model, seed, BUDGETS[budget], report)
    return report, False
