"""How diagnostics draw and where their figure and numbers go: ``{prefix}.png`` and ``{prefix}.json`` side by side."""

from __future__ import annotations

import json
import os
from typing import Any


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
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
    return {"png": png, "json": path}
