"""Linear probes: is an audio attribute linearly decodable from the hidden states, layer by layer?

Following the "information present but not used" analysis (modality collapse as mismatched decoding): if a
logistic-regression probe reads an attribute (speaker, emotion, sound class...) from a layer's hidden states well
above chance while the model answers questions about it poorly, the information reaches the decoder but the
decoder does not use it.

* Features (:func:`pooled_features`): per item, the hidden state of a layer averaged over the audio placeholder
  positions (``pool="audio"``), at the last prompt token (``pool="last"``, the row that predicts the first
  generated token), or at a given position of the unpadded prompt (``pool=int``).
* Probe (:func:`train_linear_probe`): multinomial logistic regression in torch on standardised features (train-split
  statistics), L2 penalty, L-BFGS (or Adam) for a fixed number of steps; a held-out split gives the accuracy.
  Chance = accuracy of always predicting the most frequent training class, on the held-out split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mapo.diagnostics.hidden import prompt_hidden_states
from mapo.diagnostics.output import headless_pyplot, save_figure_and_json
from mapo.modality import audio_key_mask, resolve_modality

__all__ = [
    "LinearProbeResult",
    "plot_linear_probes",
    "pooled_features",
    "linear_probe_layers",
    "train_linear_probe",
]


def pooled_features(
    model: Any,
    inputs: dict[str, torch.Tensor],
    layers: Sequence[int],
    pool: str | int = "audio",
    *,
    tokenizer: Any = None,
) -> dict[int, torch.Tensor]:
    """``{layer: [B, D]}`` pooled hidden states of one batch of prompts (see the module docstring)."""
    states = prompt_hidden_states(model, inputs, layers)
    valid = inputs["attention_mask"].bool()
    if pool == "audio":
        weights = audio_key_mask(inputs["input_ids"], resolve_modality(model, tokenizer)).float()
    elif pool == "last":
        weights = torch.zeros_like(valid, dtype=torch.float32)
        weights[:, -1] = 1.0  # prompts are left-padded: the last column is the last real token
    elif isinstance(pool, int):
        weights = torch.zeros_like(valid, dtype=torch.float32)
        for b in range(valid.shape[0]):
            cols = valid[b].nonzero().flatten()
            if not -len(cols) <= pool < len(cols):
                raise ValueError(f"pool={pool} is outside prompt {b} of {len(cols)} tokens")
            weights[b, cols[pool]] = 1.0
    else:
        raise ValueError(f"pool must be 'audio', 'last' or a token position (int), got {pool!r}")
    weights = weights.to(next(iter(states.values())).device)
    return {
        layer: (h * weights[..., None]).sum(1) / weights.sum(1, keepdim=True) for layer, h in states.items()
    }


@dataclass
class LinearProbeResult:
    """Accuracies of one probe (fractions in [0, 1])."""

    train_accuracy: float
    test_accuracy: float
    chance: float
    n_train: int
    n_test: int
    n_classes: int
    final_loss: float


def train_linear_probe(
    features: torch.Tensor,
    labels: Sequence[Any] | torch.Tensor,
    *,
    test_fraction: float = 0.3,
    steps: int = 200,
    weight_decay: float = 1e-3,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    seed: int = 0,
) -> LinearProbeResult:
    """Fit a logistic-regression probe of ``labels`` from ``features [N, D]`` and score it on a held-out split.

    Labels may be any hashable values (mapped to classes in sorted order). ``steps`` is the number of L-BFGS
    iterations (or Adam steps); ``lr`` defaults to 1.0 for L-BFGS and 0.05 for Adam.
    """
    x = torch.as_tensor(features, dtype=torch.float32).detach().cpu()
    raw = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if x.dim() != 2 or x.shape[0] != len(raw):
        raise ValueError(
            f"features must be [N, D] with one label per row, got {tuple(x.shape)} and {len(raw)} labels"
        )
    classes = sorted(set(raw), key=str)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least two label values, got {classes}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    y = torch.tensor([classes.index(v) for v in raw])
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    n_test = min(max(1, round(test_fraction * len(y))), len(y) - 2)
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    z = (x - mean) / std
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], len(classes))

    def loss_fn() -> torch.Tensor:
        return (
            torch.nn.functional.cross_entropy(head(z[train]), y[train])
            + weight_decay * head.weight.pow(2).sum()
        )

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(
            head.parameters(), lr=lr or 1.0, max_iter=steps, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)
    else:
        opt = torch.optim.Adam(head.parameters(), lr=lr or 0.05)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn().backward()
            opt.step()
    with torch.no_grad():
        pred = head(z).argmax(-1)
        majority = torch.bincount(y[train], minlength=len(classes)).argmax()
        return LinearProbeResult(
            train_accuracy=float((pred[train] == y[train]).float().mean()),
            test_accuracy=float((pred[test] == y[test]).float().mean()),
            chance=float((y[test] == majority).float().mean()),
            n_train=len(train),
            n_test=len(test),
            n_classes=len(classes),
            final_loss=float(loss_fn()),
        )


def linear_probe_layers(
    features: dict[int, torch.Tensor], labels: Sequence[Any], **kwargs: Any
) -> dict[int, LinearProbeResult]:
    """:func:`train_linear_probe` for every layer's features (same split: same ``seed``)."""
    return {layer: train_linear_probe(x, labels, **kwargs) for layer, x in sorted(features.items())}


def plot_linear_probes(
    results: dict[int, LinearProbeResult],
    out_dir: str,
    attribute: str = "attribute",
    prefix: str = "linear_probe",
) -> dict[str, str]:
    """Held-out accuracy per layer against chance; writes PNG and JSON."""
    plt = headless_pyplot()

    layers = sorted(results)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(layers, [results[i].test_accuracy for i in layers], marker="o", label="held-out accuracy")
    ax.plot(
        layers, [results[i].train_accuracy for i in layers], marker=".", alpha=0.5, label="train accuracy"
    )
    ax.plot(
        layers, [results[i].chance for i in layers], linestyle="--", color="gray", label="chance (majority)"
    )
    ax.set_xlabel("hidden-state index (0 = embeddings)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"Linear probe of '{attribute}' per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure_and_json(
        fig,
        {"attribute": attribute, "layers": {str(i): asdict(r) for i, r in results.items()}},
        out_dir,
        prefix,
    )
