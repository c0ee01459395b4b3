"""Per-token log-probabilities and entropies of a completion, in fp32, without ``[N, vocab]`` logits at once.

These are the two per-token signals of MAPO: log π(y_t | y_<t, x) for the policy-gradient/KL terms and the entropy
H(π(·|y_<t, x)) whose policy-vs-text-only difference is Δh_t (paper §3.3). Both are aligned on the generated token
(design.md §2): column t belongs to completion token t and is read from the hidden state of the position just before
it (P-1+t in a prompt of width P).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .decoder import unwrap_model

__all__ = ["completion_logps_and_entropies", "logps_and_entropies_from_hidden"]


def _backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The backbone (audio tower + language model: ``model.model`` for all supported families) and the LM head."""
    model = unwrap_model(model)
    if isinstance(getattr(model, "thinker", None), nn.Module):
        model = model.thinker  # a full Omni model: the thinker produces the text
    backbone = getattr(model, "model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(backbone, nn.Module) or not isinstance(head, nn.Linear):
        raise ValueError(
            f"{type(model).__name__} has no `.model` backbone and linear LM head; pass a *ForConditionalGeneration "
            "or *ForCausalLM model"
        )
    return backbone, head


def _chunk_stats(
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = F.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
    logp = torch.log_softmax(logits / temperature, dim=-1)  # [n, V] fp32
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return token_logp, entropy


def logps_and_entropies_from_hidden(
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    head: nn.Linear,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project ``hidden [..., D]`` through ``head`` in chunks of ``chunk_size`` rows, in fp32.

    Returns ``(log p(tokens), entropy)`` of softmax(logits / ``temperature``), both fp32 with ``tokens``' shape.
    Memory: one ``[chunk_size, V]`` fp32 block at a time; with gradients each chunk is checkpointed, so backward
    recomputes it instead of keeping every chunk's logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    shape = tokens.shape
    flat_h = hidden.reshape(-1, hidden.shape[-1])
    flat_t = tokens.reshape(-1)
    logps, ents = [], []
    needs_grad = torch.is_grad_enabled() and (flat_h.requires_grad or head.weight.requires_grad)
    for start in range(0, flat_t.numel(), chunk_size):
        h, t = flat_h[start : start + chunk_size], flat_t[start : start + chunk_size]
        if needs_grad:
            lp, en = checkpoint(_chunk_stats, h, t, head.weight, head.bias, temperature, use_reentrant=False)
        else:
            lp, en = _chunk_stats(h, t, head.weight, head.bias, temperature)
        logps.append(lp)
        ents.append(en)
    if not logps:
        empty = flat_h.new_zeros(shape, dtype=torch.float32)
        return empty, empty.clone()
    return torch.cat(logps).reshape(shape), torch.cat(ents).reshape(shape)


def completion_logps_and_entropies(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    requires_grad: bool = False,
    **model_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | y_<t, x) and H(π(·|y_<t, x)) for the last ``logits_to_keep`` tokens of ``input_ids``.

    Runs the backbone (``model.model``: for Qwen2-Audio and the Omni thinkers it includes the audio tower, so pass
    ``input_features``/``feature_attention_mask`` in ``model_kwargs`` for the policy and nothing for the text-only
    reference), then projects only the ``C = logits_to_keep`` positions P-1 .. P+C-2 through the LM head, ``chunk_size``
    rows at a time, in fp32. Both outputs are of the **temperature-scaled** distribution softmax(logits / T) — the
    sampling distribution — as in TRL.

    Args:
        input_ids, attention_mask: ``[B, P + C]`` prompt (left-padded) + completion (right-padded).
        logits_to_keep: ``C``, the completion width.
        requires_grad: keep the graph (e.g. for the loss forward, where an :func:`mapo.probe.audio_attention`
            capture may run inside the same forward); otherwise runs under ``torch.no_grad()``.

    Returns:
        ``(logps [B, C], entropies [B, C])`` fp32; padded completion positions hold values of the pad token, mask them.
    """
    if not 0 < logits_to_keep < input_ids.shape[1]:
        raise ValueError(
            f"logits_to_keep must be in [1, {input_ids.shape[1] - 1}] (the completion width, with at least one "
            f"prompt token before it), got {logits_to_keep}"
        )
    backbone, head = _backbone_and_head(model)
    with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
        out = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **model_kwargs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        if hidden.shape[1] != input_ids.shape[1]:
            raise RuntimeError(
                f"the backbone returned {hidden.shape[1]} positions for {input_ids.shape[1]} input ids (legacy "
                "placeholder expansion?); expand the audio placeholders in the processor"
            )
        c = logits_to_keep
        rows = hidden[:, -c - 1 : -1]  # row P-1+t predicts completion token t
        return logps_and_entropies_from_hidden(rows, input_ids[:, -c:], head, temperature, chunk_size)
