"""How diagnostics draw and where their figure and numbers go: ``{prefix}.png`` and ``{prefix}.json`` side by side."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

logger = logging.getLogger(__name__)


def headless_pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: diagnostics write files and never need a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure_and_json(fig: Any, payload: Any, out_dir: str, prefix: str) -> dict[str, str]:
    """Write ``fig`` to ``out_dir/{prefix}.png`` (then close it) and ``payload`` to ``out_dir/{prefix}.json``.

    Returns ``{"png": path, "json": path}``.
    """
    plt = headless_pyplot()
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, f"{prefix}.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    path = os.path.join(out_dir, f"{prefix}.json")
    nan = _count_non_finite(payload)
    if nan:
        logger.warning(
            "%s: %d value(s) are not finite (e.g. a probe on too few items has no held-out accuracy); written as "
            "null so the file stays valid JSON",
            path,
            nan,
        )
    from mapo.eval.store import write_json

    write_json(payload, path, indent=2)
    return {"png": png, "json": path}


def _count_non_finite(value: Any) -> int:
    if isinstance(value, float):
        return int(not math.isfinite(value))
    if isinstance(value, dict):
        return sum(_count_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_count_non_finite(v) for v in value)
    return 0
