"""mapo-rl: Modality-Aware Policy Optimization (MAPO) for audio and omni-modal language models.

Paper: "Escape the Language Prior: Mitigating Late-Stage Modality Collapse in Audio Reasoning via
Modality-Aware Policy Optimization" (arXiv:2605.27741).

Layers (imports only point downward): ``objective`` (pure tensor math, eq. 1-5) <- ``probe`` / ``modality``
(transformers) <- ``trainer`` (TRL). Import the heavy modules explicitly, e.g. ``from mapo.trainer import
MAPOTrainer``; ``import mapo`` stays light.
"""

__version__ = "0.1.0"
