"""Input validation for the pure tensor math of :mod:`mapo.objective` (one place, one message style).

Every check raises ``ValueError`` (``TypeError`` for a non-tensor) whose message names the argument and says how
to fix it. Per-token tensors are validated only on completion positions (``mask == 1``); what sits under padding is
never read: the ``token_*`` helpers return a copy with padding replaced by 0 through ``torch.where``, so padding
(finite garbage, NaN or inf alike) changes neither values nor gradients.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _as_compute_float(x: Tensor) -> Tensor:
    """Integers/bools become float32, fp16/bf16 are upcast to float32 (softmax and exp need the range)."""
    if not x.is_floating_point() or x.dtype in _LOW_PRECISION:
        return x.float()
    return x


def _require_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_mask(mask: object, name: str = "mask") -> Tensor:
    """A non-empty ``[B, T]`` 0/1 (or bool) completion mask, returned as bool."""
    mask = _require_tensor(name, mask)
    if mask.dim() != 2:
        raise ValueError(
            f"{name} must be a [B, T] tensor (batch, completion tokens), got shape {tuple(mask.shape)}"
        )
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must contain only 0 and 1 (1 = completion token, 0 = padding)")
    return mask.bool()


def _check_same_shape(name: str, x: Tensor, mask: Tensor, ref: str = "mask") -> None:
    if x.shape != mask.shape:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)} but {ref} has shape {tuple(mask.shape)}; per-token tensors must be "
            "right-padded [B, T] aligned with the completion mask"
        )


def token_values(name: str, x: object, mask: Tensor, ref: str = "mask") -> Tensor:
    """A ``[B, T]`` float tensor finite on completion positions, with padding replaced by 0."""
    x = _require_tensor(name, x)
    _check_same_shape(name, x, mask, ref)
    x = _as_compute_float(x)
    if not bool(torch.isfinite(x[mask]).all()):
        raise ValueError(f"{name} has non-finite values (NaN/inf) at completion positions (mask == 1)")
    return torch.where(mask, x, 0.0)


def token_weights(name: str, x: object, mask: Tensor) -> Tensor:
    """Like :func:`token_values` and also non-negative on completion positions."""
    x = token_values(name, x, mask)
    if bool((x < 0).any()):
        raise ValueError(f"{name} must be >= 0 at completion positions (it is a per-token weight)")
    return x


def token_gate(name: str, x: object, mask: Tensor) -> Tensor:
    """A ``[B, T]`` 0/1 gate checked on completion positions; returns the bool gate AND mask."""
    x = _require_tensor(name, x)
    _check_same_shape(name, x, mask)
    v = x[mask]
    if not bool(((v == 0) | (v == 1)).all()):
        raise ValueError(f"{name} must be 0/1 (or bool) at completion positions, e.g. a binary POS gate")
    return mask & (x != 0)


def seq_values(name: str, x: object, batch: int | None) -> Tensor:
    """A finite ``[B]`` float tensor (``batch=None``: any B)."""
    x = _require_tensor(name, x)
    if x.dim() != 1 or (batch is not None and x.shape[0] != batch):
        raise ValueError(
            f"{name} must have shape [{batch or 'B'}] (one value per sequence), got {tuple(x.shape)}"
        )
    x = _as_compute_float(x)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite values (NaN/inf)")
    return x


def seq_flags(name: str, x: object, batch: int) -> Tensor:
    """A ``[B]`` bool or 0/1 tensor, returned as bool."""
    x = _require_tensor(name, x)
    if x.dim() != 1 or x.shape[0] != batch:
        raise ValueError(f"{name} must have shape [{batch}] (one flag per sequence), got {tuple(x.shape)}")
    if x.dtype != torch.bool and not bool(((x == 0) | (x == 1)).all()):
        raise ValueError(f"{name} must be bool or 0/1 (1 = the sample failed)")
    return x.bool()


def advantages_per_token(name: str, x: object, mask: Tensor) -> Tensor:
    """``[B]`` advantages as ``[B, 1]``, or ``[B, T]`` advantages with padding replaced by 0."""
    x = _require_tensor(name, x)
    if x.dim() == 1:
        return seq_values(name, x, mask.shape[0]).unsqueeze(1)
    if x.dim() == 2:
        return token_values(name, x, mask)
    raise ValueError(
        f"{name} must be [B] (sequence-level Â) or [B, T] (per token), got shape {tuple(x.shape)}"
    )


def number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
    allow_none: bool = False,
    allow_inf: bool = False,
) -> float | None:
    """A real hyper-parameter within bounds (``strict``: ``value > minimum``)."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} must be a number, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def clip_value(name: str, value: object) -> float | None:
    """A clip threshold: ``None`` disables it, otherwise it must be > 0 (``inf`` is allowed and never binds)."""
    if value is not None and not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0:
        raise ValueError(f"{name} must be > 0; pass {name}=None to disable the clip")
    return number(name, value, minimum=0.0, strict=True, allow_none=True, allow_inf=True)


def group_size(value: object, batch: int) -> int:
    """GRPO group size G: an int >= 2 dividing the batch size B > 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"group_size must be an int, got {type(value).__name__}")
    if value < 2:
        raise ValueError(f"group_size must be >= 2 (the unbiased group std needs two samples), got {value}")
    if batch == 0 or batch % value != 0:
        raise ValueError(f"group_size={value} must divide the number of rewards (B={batch}, must be > 0)")
    return value
