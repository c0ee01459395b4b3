"""TRL integration: :class:`AudioGRPOTrainer` (GRPO that trains on the audio) and :class:`MAPOTrainer`."""

from .audio_grpo import AudioGRPOTrainer
from .config import PAPER_POS_TAGS, MAPOConfig
from .mapo_trainer import MAPOTrainer
from .protocol import TRL_PROTOCOL

__all__ = ["PAPER_POS_TAGS", "TRL_PROTOCOL", "AudioGRPOTrainer", "MAPOConfig", "MAPOTrainer"]
