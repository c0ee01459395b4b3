"""Diagnostics of modality use: the paper's Fig. 2/6 trajectories, evidence masking (ACS, Table 4), POS entropy
(Fig. 7), linear probes of audio attributes, and the audio/text modality gap. Each piece is a pure function plus a
plot function writing PNG + JSON; ``mapo diagnose`` (:func:`mapo.diagnostics.cli.main`) runs them on benchmark
items.
"""

from mapo.diagnostics.evidence import (
    DEFAULT_RATIOS,
    acs_table,
    evidence_masking,
    frame_edges,
    mask_waveform,
    plot_acs,
    region_weights,
    select_regions,
)
from mapo.diagnostics.hidden import prompt_hidden_states
from mapo.diagnostics.linear_probes import (
    LinearProbeResult,
    linear_probe_layers,
    plot_linear_probes,
    pooled_features,
    train_linear_probe,
)
from mapo.diagnostics.modality_gap import (
    modality_gap,
    modality_gap_by_layer,
    modality_states,
    plot_modality_gap,
)
from mapo.diagnostics.pos_entropy import NO_WORD, plot_pos_entropy, pos_entropy_summary, summarize_by_tag
from mapo.diagnostics.signals import (
    TokenSignals,
    completion_key_attention,
    split_rows,
    teacher_forced_signals,
)
from mapo.diagnostics.trajectory import (
    Trajectory,
    plot_trajectory,
    trajectories_from_signals,
    write_trajectories,
)
from mapo.probe import KeyAttentionCapture, audio_key_attention

__all__ = [
    "DEFAULT_RATIOS",
    "NO_WORD",
    "KeyAttentionCapture",
    "LinearProbeResult",
    "TokenSignals",
    "Trajectory",
    "acs_table",
    "audio_key_attention",
    "completion_key_attention",
    "evidence_masking",
    "frame_edges",
    "mask_waveform",
    "modality_gap",
    "modality_gap_by_layer",
    "modality_states",
    "plot_acs",
    "plot_modality_gap",
    "plot_pos_entropy",
    "plot_linear_probes",
    "plot_trajectory",
    "pooled_features",
    "pos_entropy_summary",
    "linear_probe_layers",
    "prompt_hidden_states",
    "region_weights",
    "select_regions",
    "split_rows",
    "summarize_by_tag",
    "teacher_forced_signals",
    "train_linear_probe",
    "trajectories_from_signals",
    "write_trajectories",
]
