"""Suite-wide set-up that must run before anything imports transformers."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

#: TEST-ONLY torchvision stand-in for the vLLM tests of the Omni thinkers: vLLM's and transformers' Omni processors
#: import torchvision (a video processor), and PyPI's torchvision is a CUDA build that cannot load beside the CPU
#: torch. transformers decides once, at import, whether torchvision exists, so the stand-in goes on the path here,
#: and only where vLLM is installed and no real torchvision is (the .venv-vllm of `make test`).
TORCHVISION_STUB = Path(__file__).parent / "trainer" / "rollout" / "_torchvision_stub"

if importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(TORCHVISION_STUB))
    # vLLM inspects model classes in a subprocess: it must see the stand-in too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TORCHVISION_STUB), os.environ.get("PYTHONPATH")) if p
    )
