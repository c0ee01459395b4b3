"""Reductions of per-head audio attention masses into a_t (paper §3.2), for one captured forward.

m_t^(l,h) = Σ_{j∈S_audio} α_{t,j}^(l,h) per layer l and head h; m_t^(l,max) = max_h, m_t^(l,mean) = mean_h;
a_t = mean over target layers of m_t^(l,max) (the paper's choice; both reductions are options). The max routes the
gradient through the head that carries the most audio mass (eq. 13). Pure tensor code: the capture that fills
:class:`ForwardRecord` lives in :mod:`mapo.probe.capture`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["HEAD_REDUCE", "LAYER_REDUCE", "ForwardRecord", "check_choice"]

HEAD_REDUCE = ("max", "mean")
LAYER_REDUCE = ("mean", "max")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass
class ForwardRecord:
    """What one captured forward produced.

    ``raw[l]`` is the per-head mass ``[B, H, T_q]`` of layer ``l`` at the query positions ``query_columns``
    (``[T_q]``), in the activation dtype (fp32 for the naive method); ``query_on`` (bool ``[B, T_q]``) marks the
    rows the query mask selects. Reductions return fp32 ``[B, L]`` with zeros outside the query mask.
    """

    batch_size: int
    seq_len: int
    query_columns: torch.Tensor
    query_on: torch.Tensor
    raw: dict[int, torch.Tensor] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    def _scatter(self, values: torch.Tensor) -> torch.Tensor:
        """``[..., T_q]`` at ``query_columns`` -> ``[..., L]`` (zeros elsewhere; differentiable)."""
        out = values.new_zeros((*values.shape[:-1], self.seq_len))
        return out.index_copy(-1, self.query_columns, values)

    def reduce(self, head_reduce: str = "max", layer_reduce: str = "mean") -> torch.Tensor:
        """a_t (§3.2): ``head_reduce`` over heads, then ``layer_reduce`` over the recorded layers. fp32 ``[B, L]``."""
        check_choice("head_reduce", head_reduce, HEAD_REDUCE)
        check_choice("layer_reduce", layer_reduce, LAYER_REDUCE)
        key = (head_reduce, layer_reduce)
        if key not in self._cache:
            per_layer = []
            for layer in sorted(self.raw):
                m = self.raw[layer].float()
                per_layer.append(m.max(dim=1).values if head_reduce == "max" else m.mean(dim=1))
            stacked = torch.stack(per_layer)  # [n_layers, B, T_q]
            a = stacked.mean(dim=0) if layer_reduce == "mean" else stacked.max(dim=0).values
            self._cache[key] = self._scatter(torch.where(self.query_on, a, torch.zeros_like(a)))
        return self._cache[key]

    def per_head(self) -> dict[int, torch.Tensor]:
        """Layer -> fp32 per-head mass ``[B, H, L]`` (zeros outside the query mask)."""
        if "per_head" not in self._cache:
            out = {}
            for layer, m in sorted(self.raw.items()):
                m = m.float()
                out[layer] = self._scatter(torch.where(self.query_on[:, None, :], m, torch.zeros_like(m)))
            self._cache["per_head"] = out
        return self._cache["per_head"]
