"""``mapo --help`` and ``mapo eval --help`` answer without importing torch (the 6-7 s of a cold start)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"]])
def test_help_does_not_import_the_heavy_stack(argv):
    heavy = ("torch", "transformers", "trl")
    code = (
        "import sys\n"
        "from mapo.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout
