"""Results as tables like the paper's Tables 2-3 (rich) and as JSON."""

from __future__ import annotations

from typing import Any

__all__ = ["print_summary", "summary_tables", "write_results"]


def _pct(cell: dict[str, Any]) -> str:
    return "-" if cell["accuracy"] is None else f"{100 * cell['accuracy']:.2f}"


def summary_tables(summary: dict[str, dict[str, Any]], label: str = "model") -> list[Any]:
    """One ``rich.table.Table`` per benchmark: the paper's columns plus "Overall" (micro-average), in %."""
    from rich.table import Table

    tables = []
    for res in summary.values():
        table = Table(title=f"{res['title']} (accuracy %, overall = micro-average over scored items)")
        table.add_column("", style="bold")
        for group in res["groups"]:
            table.add_column(group.title(), justify="right")
        table.add_column("Overall", justify="right", style="bold")
        cells = [*res["groups"].values(), res["overall"]]
        table.add_row(label, *[_pct(c) for c in cells])
        table.add_row("scored / items", *[f"{c['n_scored']}/{c['n_items']}" for c in cells], style="dim")
        notes = []
        if res["n_overall_only"]:
            notes.append(f"{res['n_overall_only']} item(s) outside the columns count in Overall only")
        if res["unscored"]:
            notes.append("unscored: " + ", ".join(f"{k} ×{v}" for k, v in sorted(res["unscored"].items())))
        if notes:
            table.caption = "; ".join(notes)
        tables.append(table)
    return tables


def print_summary(summary: dict[str, dict[str, Any]], label: str = "model", console: Any = None) -> None:
    from rich.console import Console

    console = console or Console()
    for table in summary_tables(summary, label):
        console.print(table)


def write_results(summary: dict[str, dict[str, Any]], path: str, **extra: Any) -> None:
    """``{"results": summary, **extra}`` as indented, always-valid JSON (accuracies are fractions in [0, 1])."""
    from mapo.eval.store import write_json

    write_json({"results": summary, **extra}, path, indent=2)
