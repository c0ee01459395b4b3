"""mapo-rl: Modality-Aware Policy Optimization (MAPO) for audio and omni-modal language models.

Paper: "Escape the Language Prior: Mitigating Late-Stage Modality Collapse in Audio Reasoning via
Modality-Aware Policy Optimization" (arXiv:2605.27741).

Layers (imports only point downward; ``tests/test_layers.py`` checks it): ``objective`` (pure tensor math,
eq. 1-5) <- ``modality`` (per-family facts, transformers) <- ``probe`` (the audio attention mass) <- ``trainer``
(the only package that imports TRL) <- ``cli``. ``rewards``, ``pos_gate`` and ``data`` stand beside them;
``eval``, ``diagnostics`` and ``synthetic`` are consumers. Import the heavy modules explicitly, e.g.
``from mapo.trainer import MAPOTrainer``; ``import mapo`` stays light.
"""

from . import _moved

__version__ = "0.1.0"

_moved.install()  # the 0.1 module paths (mapo.token_stats, mapo.train_cli, ...) keep importing, with a warning
