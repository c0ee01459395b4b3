"""``MAPOConfig``: TRL's ``GRPOConfig`` plus every MAPO hyper-parameter, with the paper's Table 5 defaults.

Each field carries the paper's symbol in its help text, so the CLI (``mapo train --help``), the YAML configs and
this file agree. Fields inherited from ``GRPOConfig`` whose defaults differ here are listed in the class docstring.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from ..modality import TEXT_ONLY_MODES
from ..probe import HEAD_REDUCE, LAYER_REDUCE

#: The paper's POS target set (appendix E).
PAPER_POS_TAGS: tuple[str, ...] = ("NOUN", "VERB", "ADJ", "ADV", "NUM", "X")

_TEXT_REFERENCES = ("frozen", "policy")


@dataclass
class MAPOConfig(GRPOConfig):
    r"""Configuration of :class:`~mapo.trainer.MAPOTrainer` (paper §3, Table 5).

    Defaults that differ from ``GRPOConfig``, all from the paper's Table 5 (appendix F):
    ``loss_type="grpo"`` (eq. 2 is a per-sequence mean), ``beta=0.002``, ``temperature=1.2``, ``top_k=50``,
    ``top_p=0.99``, ``use_bias_correction_kl=False`` (eq. 5's KL is the plain k3 estimator).

    Set ``eta=0`` for the mask-only ablation and ``use_relevance_mask=False`` for the attention-only-branch
    ablation; both off is exactly GRPO.
    """

    # ---- GRPO defaults changed to the paper's values --------------------------------------------------------------
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "Policy-loss aggregation. MAPO's eq. 2 is a per-sequence weighted mean, which is TRL's 'grpo'. "
            "Another value is refused unless `allow_non_grpo_loss=True`."
        },
    )
    beta: float = field(
        default=0.002, metadata={"help": "β: weight of the k3 KL term (eq. 5). Paper: 0.002."}
    )
    temperature: float = field(
        default=1.2,
        metadata={
            "help": "Rollout temperature (paper 1.2). Log-probs and entropies (Δh) use the same temperature."
        },
    )
    top_k: int = field(default=50, metadata={"help": "Rollout top-k (paper 50)."})
    top_p: float = field(default=0.99, metadata={"help": "Rollout top-p (paper 0.99)."})
    use_bias_correction_kl: bool = field(
        default=False,
        metadata={
            "help": "Multiply the per-token KL by the importance ratio (TRL option). Off: eq. 5's plain k3."
        },
    )

    # ---- MAPO core (Table 5) ------------------------------------------------------------------------------------
    eta: float = field(
        default=0.1,
        metadata={
            "help": "η: weight of the attention loss L_attn (eq. 5). 0 = mask-only ablation. Paper: 0.1."
        },
    )
    use_relevance_mask: bool = field(
        default=True,
        metadata={"help": "Reweight the policy gradient with the modality relevance mask ω̃ (eq. 1-2)."},
    )
    tau_base: float = field(
        default=1.0, metadata={"help": "τ_base: base temperature of ω̃ and ν̃; τ_T = τ_base·ln(max(T,2))."}
    )
    mask_clip: float = field(default=5.0, metadata={"help": "C_mask: cap of ω̃ (eq. 1) and ν̃ (eq. 3)."})
    kappa: float = field(
        default=1.0, metadata={"help": "κ ≥ 0: exponent of the temporal weight (t/T)^κ (eq. 4)."}
    )
    fail_gate_floor: float = field(
        default=0.1, metadata={"help": "α: floor of the failure gate f̂ = max(1[r_acc ≤ θ_fail], α) (eq. 4)."}
    )
    fail_threshold: float = field(
        default=0.0, metadata={"help": "θ_fail: a sample failed when its accuracy reward is ≤ this value."}
    )
    advantage_floor: float = field(
        default=0.1,
        metadata={
            "help": "ε (Table 5 'advantage floor'): |Â| is raised to at least ε for failed samples (eq. 4)."
        },
    )
    prefactor_clip: float = field(
        default=3.0, metadata={"help": "C_pref: cap of the prefactor f̂·|Â| (eq. 4)."}
    )
    log_eps: float = field(default=1e-6, metadata={"help": "ε inside −log(a_t + ε) of the attention loss."})
    target_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "L_tgt: distinct 0-based decoder layers whose audio attention mass forms a_t. Default: the last "
            "five (paper: 43-47 of Qwen3-Omni's 48)."
        },
    )
    head_reduce: str = field(
        default="max", metadata={"help": "Reduction of a_t over heads: 'max' (paper) or 'mean'."}
    )
    layer_reduce: str = field(
        default="mean", metadata={"help": "Reduction of a_t over target layers: 'mean' (paper) or 'max'."}
    )
    include_audio_markers: bool = field(
        default=False,
        metadata={"help": "Count the audio start/end marker tokens as audio keys (the public code does)."},
    )
    pos_tags: list[str] = field(
        default_factory=lambda: list(PAPER_POS_TAGS),
        metadata={"help": "Coarse POS tags that open the POS gate g^pos (appendix E)."},
    )
    pos_tagger: str = field(
        default="nltk",
        metadata={
            "help": "POS tagger: 'nltk' (the paper's averaged perceptron; needs its data installed) or 'lexicon' "
            "(built-in closed-class word list, no data)."
        },
    )
    accuracy_reward_name: str = field(
        default="accuracy_reward",
        metadata={"help": "Name of the reward function whose raw value drives the failure gate f̂."},
    )
    text_only_mode: str = field(
        default="drop",
        metadata={
            "help": "Audio ablation for the text-only reference: 'drop' removes the audio placeholders and markers "
            "(the paper's x_text); 'keep_placeholders' keeps them and drops only the features (public code)."
        },
    )
    text_reference: str = field(
        default="frozen",
        metadata={
            "help": "Model of π_text-ref: 'frozen' (the initial policy: the KL reference, or the policy with LoRA "
            "adapters disabled) or 'policy' (the live policy without audio; saves memory)."
        },
    )
    text_reference_model: str | None = field(
        default=None,
        metadata={"help": "Optional path of a separate frozen text-reference model (same vocabulary)."},
    )
    attention_only: bool = field(
        default=False,
        metadata={
            "help": "Diagnostic mode: train on η·L_attn alone (the policy-gradient and KL terms get weight 0)."
        },
    )
    attention_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Deprecated name of target_layers (read with a warning; removed in 0.3)."},
    )
    allow_non_grpo_loss: bool = field(
        default=False,
        metadata={
            "help": "Allow a loss_type other than 'grpo' (eq. 2's per-sequence normalisation no longer holds)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate_mapo()

    def validate_mapo(self) -> None:
        """Check the MAPO fields; every message names the field and how to fix it."""
        if self.loss_type != "grpo" and not self.allow_non_grpo_loss:
            raise ValueError(
                f"loss_type={self.loss_type!r}: MAPO's eq. 2 normalises each sequence by Σω̃, which is TRL's "
                "loss_type='grpo'. Set loss_type='grpo', or allow_non_grpo_loss=True to use another aggregation "
                "with the same token weights."
            )
        for name in ("tau_base", "mask_clip", "prefactor_clip", "log_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("eta", "kappa", "fail_gate_floor", "advantage_floor"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.fail_gate_floor > 1:
            raise ValueError(f"fail_gate_floor (α) must lie in [0, 1], got {self.fail_gate_floor}")
        if self.head_reduce not in HEAD_REDUCE:
            raise ValueError(f"head_reduce must be one of {HEAD_REDUCE}, got {self.head_reduce!r}")
        if self.layer_reduce not in LAYER_REDUCE:
            raise ValueError(f"layer_reduce must be one of {LAYER_REDUCE}, got {self.layer_reduce!r}")
        if self.text_only_mode not in TEXT_ONLY_MODES:
            raise ValueError(f"text_only_mode must be one of {TEXT_ONLY_MODES}, got {self.text_only_mode!r}")
        if self.text_reference not in _TEXT_REFERENCES:
            raise ValueError(f"text_reference must be one of {_TEXT_REFERENCES}, got {self.text_reference!r}")
        if self.attention_layers is not None:
            if self.target_layers is not None:
                raise ValueError(
                    "attention_layers is the deprecated name of target_layers; set only target_layers, got both "
                    f"({self.attention_layers} and {self.target_layers})"
                )
            warnings.warn(
                "MAPOConfig.attention_layers is deprecated (removed in 0.3): rename the field / YAML key to "
                "target_layers",
                DeprecationWarning,
                stacklevel=4,
            )
            self.target_layers, self.attention_layers = self.attention_layers, None
        if self.target_layers is not None:
            if isinstance(self.target_layers, str):  # CLI / YAML "43,44,45"
                self.target_layers = [int(x) for x in self.target_layers.split(",") if x.strip()]
            layers = [int(i) for i in self.target_layers]
            if not layers or any(i < 0 for i in layers) or len(set(layers)) != len(layers):
                # A repeated layer would count twice in a_t's layer mean; the upper bound is checked by the
                # trainer, which knows the model's depth.
                raise ValueError(
                    f"target_layers must be distinct non-negative decoder layer indices, got {self.target_layers}"
                )
            self.target_layers = layers
        if isinstance(self.pos_tags, str):
            self.pos_tags = [t.strip() for t in self.pos_tags.split(",") if t.strip()]
        if not self.pos_tags:
            raise ValueError("pos_tags must name at least one coarse tag (paper: NOUN,VERB,ADJ,ADV,NUM,X)")
        if self.attention_only and self.eta == 0:
            raise ValueError("attention_only=True trains on η·L_attn alone, so eta must be > 0")
        if self.use_vllm:
            raise ValueError(
                "use_vllm=True: vLLM rollouts do not carry audio in TRL 1.16 (images only), so they would be "
                "generated without the audio. Use the transformers generation path (use_vllm=False)."
            )

    @property
    def attention_branch_on(self) -> bool:
        """Whether the attention loss (eq. 4) is computed at all."""
        return self.eta > 0
