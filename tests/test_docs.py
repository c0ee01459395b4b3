"""Every document cited by the code, tests and docs is a file of this repository; no machine paths, no issue numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_FILES = sorted(
    [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "benchmarks").rglob("*.py"),
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
    ]
)
DOC = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+\.md)\b")
FORBIDDEN = {
    "an issue number instead of a document": re.compile(r"\bissue #\d+|\bclosing note", re.IGNORECASE),
    "a research note that is not in the repository": re.compile(r"\bresearch/[\w-]+\.md"),
    "a path of a development machine": re.compile(r"(?<![\w.])/(?:work|tmp|home|Users)/"),
}
THIS = Path(__file__).resolve()


def _files():
    return [p for p in TEXT_FILES if p.resolve() != THIS and "__pycache__" not in p.parts]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_documents_exist_and_nothing_outside_is_cited(path):
    text = path.read_text(encoding="utf-8")
    missing = sorted(
        {
            name
            for name in DOC.findall(text)
            if not (ROOT / name).exists()
            and not (path.parent / name).exists()
            and not (ROOT / "docs" / name).exists()
        }
    )
    assert not missing, f"{path.relative_to(ROOT)} cites documents that are not in the repository: {missing}"
    for what, pattern in FORBIDDEN.items():
        hits = sorted(set(pattern.findall(text)))
        assert not hits, f"{path.relative_to(ROOT)} cites {what}: {hits}"
