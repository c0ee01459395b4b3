"""A worked example of the MAPO objective (eq. 1-5) on one group of G = 4 short completions, every step printed.

``mapo example`` (or ``python -m mapo.objective.worked_example``) prints it as text; ``python -m mapo.objective.worked_example
--markdown > docs/worked_example.md`` regenerates the documentation page from the same code, so the numbers in the
doc are the ones printed here (a test checks that they agree). All numbers come from :mod:`mapo.objective`; the
per-token ℓ_t and k3 columns are recomputed inline only for display (their means are the library's losses).
"""

from __future__ import annotations

import argparse
import sys

import torch

from .. import objective as obj

G, WIDTH = 4, 8
PAD = [0.0] * WIDTH
#: Hyper-parameters: the paper's Table 5 (appendix F); α = 0.1 as in the authors' launcher.
HP = dict(
    tau_base=1.0, mask_clip=5.0, kappa=1.0, fail_gate_floor=0.1, advantage_floor=0.1, prefactor_clip=3.0
)
BETA, ETA, EPS_CLIP, LOG_EPS = 0.002, 0.1, 0.2, 1e-6

# One prompt, four sampled completions of lengths 8, 6, 5, 3 (right-padded to 8 tokens).
LENGTHS = [8, 6, 5, 3]
REWARDS = [4.0, 1.0, 3.0, 0.0]  # λ-weighted total reward (accuracy counts 2 of 4)
ACCURACY = [1.0, 0.0, 1.0, 0.0]  # raw accuracy reward: failed = r_acc ≤ θ_fail = 0
DELTA_H = [
    [0.1, 2.5, 0.0, 6.0, -0.4, 1.2, 0.0, 0.3],
    [1.5, 0.2, -0.1, 0.8, 3.0, 0.0],
    [0.0, 0.4, 2.2, 0.1, 0.9],
    [0.5, -1.5, 0.0],
]
POS_GATE = [[0, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 1, 0], [0, 1, 1, 0, 1], [0, 0, 0]]
AUDIO_MASS = [
    [0.42, 0.35, 0.30, 0.22, 0.15, 0.09, 0.05, 0.03],
    [0.30, 0.25, 0.12, 0.08, 0.02, 0.01],
    [0.50, 0.40, 0.33, 0.20, 0.10],
    [0.20, 0.10, 0.05],
]
LOGPS = [
    [-0.50, -1.20, -0.10, -2.30, -0.80, -0.40, -0.05, -1.00],
    [-0.90, -0.30, -1.60, -0.70, -2.00, -0.20],
    [-0.20, -1.10, -0.60, -0.30, -0.90],
    [-1.40, -0.70, -0.25],
]
# old = logps + shift (ρ = exp(−shift)); ref = logps + shift.
OLD_SHIFT = [
    [0.00, 0.10, -0.05, 0.40, -0.30, 0.00, 0.02, -0.10],
    [0.05, -0.25, 0.00, 0.10, 0.30, -0.02],
    [-0.10, 0.00, 0.20, 0.05, -0.15],
    [0.00, 0.35, -0.05],
]
REF_SHIFT = [
    [0.05, -0.10, 0.00, 0.20, 0.10, -0.05, 0.00, 0.30],
    [0.00, 0.10, -0.20, 0.05, 0.40, 0.00],
    [0.10, -0.05, 0.00, 0.15, 0.00],
    [-0.30, 0.20, 0.00],
]


def _pad(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor([list(r) + PAD[len(r) :] for r in rows], dtype=torch.float64)


def inputs() -> dict[str, torch.Tensor]:
    """The example batch as float64 ``[4, 8]`` / ``[4]`` tensors."""
    logps = _pad(LOGPS)
    return dict(
        rewards=torch.tensor(REWARDS, dtype=torch.float64),
        failed=torch.tensor(ACCURACY) <= 0.0,
        mask=_pad([[1.0] * n for n in LENGTHS]),
        delta_h=_pad(DELTA_H),
        pos_gate=_pad(POS_GATE),
        audio_mass=_pad(AUDIO_MASS),
        logps=logps,
        old_logps=logps + _pad(OLD_SHIFT),
        ref_logps=logps + _pad(REF_SHIFT),
    )


# ----------------------------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------------------------


def _table(rows: torch.Tensor, mask: torch.Tensor, extra: dict[str, list[str]] | None = None) -> str:
    head = "seq |" + "".join(f"{f't={t + 1}':>9}" for t in range(WIDTH))
    extra = extra or {}
    head += "".join(f" | {k:>9}" for k in extra)
    lines = [head, "-" * len(head)]
    for b in range(rows.shape[0]):
        cells = "".join(f"{rows[b, t].item():9.4f}" if mask[b, t] else f"{'·':>9}" for t in range(WIDTH))
        lines.append(f"{b + 1:>3} |{cells}" + "".join(f" | {v[b]:>9}" for v in extra.values()))
    return "\n".join(lines)


def _col(values: torch.Tensor, fmt: str = "{:.4f}") -> list[str]:
    return [fmt.format(v) for v in values.tolist()]


# ----------------------------------------------------------------------------------------------------------------
# The steps: (title, explanation for the doc, printed block)
# ----------------------------------------------------------------------------------------------------------------


def sections() -> list[tuple[str, str, str]]:
    x = inputs()
    m, mb = x["mask"], x["mask"].bool()
    out: list[tuple[str, str, str]] = []

    lengths = m.sum(1)
    rows = [
        f"seq {b + 1}: T = {int(lengths[b])}, reward r = {REWARDS[b]:.1f}, accuracy r_acc = {ACCURACY[b]:.0f}, "
        f"failed = {bool(x['failed'][b])}"
        for b in range(G)
    ]
    hp = ", ".join(f"{k}={v}" for k, v in HP.items())
    rows.append(f"hyper-parameters: {hp}, beta={BETA}, eta={ETA}, epsilon={EPS_CLIP}, log_eps={LOG_EPS}")
    out.append(
        ("Inputs", "One prompt, G = 4 completions (right-padded; `·` marks padding).", "\n".join(rows))
    )

    adv = obj.group_advantages(x["rewards"], G)
    r = x["rewards"]
    block = (
        f"group mean = {r.mean().item():.6f}, unbiased std = {r.std().item():.6f}\n"
        f"A_hat = [{', '.join(_col(adv, '{:.6f}'))}]"
    )
    out.append(
        ("Step 1 - group advantages", "Â = (r − mean_g r) / (std_g r + 1e-4), unbiased std (§2).", block)
    )

    tau = obj.length_temperature(m, HP["tau_base"])
    block = _table(x["delta_h"], mb, {"tau_T": _col(tau)})
    out.append(("Step 2 - differential entropy and length temperature", _T_DH, block))

    omega = obj.relevance_mask(x["delta_h"], m, HP["tau_base"], HP["mask_clip"])
    block = _table(omega, mb, {"sum": _col(omega.sum(1)), "T": _col(lengths, "{:.0f}")})
    out.append(("Step 3 - modality relevance mask (eq. 1)", _T_OMEGA, block))

    ratio = torch.where(mb, torch.exp(x["logps"] - x["old_logps"]), 0.0)
    a = adv.unsqueeze(1)
    ell = -torch.min(ratio * a, ratio.clamp(1 - EPS_CLIP, 1 + EPS_CLIP) * a) * m
    pg = obj.policy_gradient_loss(x["logps"], x["old_logps"], adv, omega, m, EPS_CLIP, EPS_CLIP)
    grpo = obj.policy_gradient_loss(x["logps"], x["old_logps"], adv, m, m, EPS_CLIP, EPS_CLIP)
    per_seq = (omega * ell).sum(1) / omega.sum(1)
    block = (
        "rho_t = exp(logp - logp_old)\n"
        + _table(ratio, mb)
        + "\n\nl_t = -min(rho A, clip(rho, 0.8, 1.2) A)\n"
        + _table(ell, mb, {"wmean": _col(per_seq), "mean": _col(ell.sum(1) / lengths)})
        + f"\n\nL_PG (eq. 2, omega-weighted) = {pg.item():.7f}\nL_PG (plain GRPO, 1/T)       = {grpo.item():.7f}"
    )
    out.append(("Step 4 - reweighted policy gradient (eq. 2)", _T_PG, block))

    d = x["ref_logps"] - x["logps"]
    k3 = (torch.exp(d) - d - 1) * m
    kl = obj.kl_k3(x["logps"], x["ref_logps"], m)
    block = _table(k3, mb, {"mean": _col(k3.sum(1) / lengths, "{:.6f}")}) + f"\n\nL_KL = {kl.item():.7f}"
    out.append(
        ("Step 5 - k3 KL", "k3_t = exp(r − l) − (r − l) − 1, per-sequence mean, unweighted (§2).", block)
    )

    nu = obj.inverse_relevance_weight(x["delta_h"], x["pos_gate"], m, HP["tau_base"], HP["mask_clip"])
    n_pos = (x["pos_gate"] * m).sum(1)
    block = "POS gate\n" + _table(x["pos_gate"], mb) + "\n\nnu~\n"
    block += _table(nu, mb, {"sum": _col(nu.sum(1)), "N_pos": _col(n_pos, "{:.0f}")})
    out.append(("Step 6 - inverse relevance weight (eq. 3)", _T_NU, block))

    temp = obj.temporal_weight(m, HP["kappa"])
    out.append(
        (
            "Step 7 - temporal weight (eq. 4)",
            "(t/T)^κ with t 1-based over completion tokens.",
            _table(temp, mb),
        )
    )

    pk = {k: HP[k] for k in ("fail_gate_floor", "advantage_floor", "prefactor_clip")}
    pref = obj.attention_prefactor(adv, x["failed"], **pk)
    f_hat = torch.where(x["failed"], 1.0, torch.full_like(adv, HP["fail_gate_floor"]))
    scale = torch.where(x["failed"], adv.abs().clamp(min=HP["advantage_floor"]), adv.abs())
    block = "\n".join(
        f"seq {b + 1}: |A| = {adv[b].abs().item():.6f}, f_hat = {f_hat[b].item():.1f}, "
        f"s = {scale[b].item():.6f}, prefactor = min(f_hat*s, 3) = {pref[b].item():.6f}"
        for b in range(G)
    )
    out.append(("Step 8 - failure gate and prefactor (eq. 4)", _T_PREF, block))

    coef = obj.attention_coefficients(x["delta_h"], x["pos_gate"], adv, x["failed"], m, **HP)
    penalty = torch.where(mb, -torch.log(x["audio_mass"] + LOG_EPS), 0.0)
    attn = obj.attention_loss_from_coefficients(x["audio_mass"], coef, LOG_EPS)
    block = "audio attention mass a_t\n" + _table(x["audio_mass"], mb)
    block += "\n\n-log(a_t + 1e-6)\n" + _table(penalty, mb)
    block += "\n\nc_t = prefactor / max(N_pos, 1) * (t/T)^kappa * nu~_t\n"
    block += _table(coef, mb, {"sum c*pen": _col((coef * penalty).sum(1), "{:.6f}")})
    block += f"\n\nL_attn (eq. 4) = {attn.item():.7f}"
    out.append(("Step 9 - attention loss (eq. 4)", _T_ATTN, block))

    loss, metrics = obj.mapo_loss(
        logps=x["logps"],
        old_logps=x["old_logps"],
        ref_logps=x["ref_logps"],
        advantages=adv,
        delta_h=x["delta_h"],
        mask=m,
        audio_mass=x["audio_mass"],
        pos_gate=x["pos_gate"],
        failed=x["failed"],
        beta=BETA,
        eta=ETA,
        **HP,
    )
    block = (
        f"L_MAPO = L_PG + beta*L_KL + eta*L_attn = {pg.item():.7f} + {BETA}*{kl.item():.7f} + {ETA}*{attn.item():.7f}"
        f"\n       = {loss.item():.7f}\nmapo_loss metrics:\n"
        + "\n".join(f"  {k:<18} {v:.6f}" for k, v in sorted(metrics.items()))
    )
    out.append(("Step 10 - total (eq. 5)", "L_MAPO = L_PG(ω̃) + β·L_KL + η·L_attn, via `mapo_loss`.", block))
    out.append(("Cross-check - reference worked example", _T_REF, _reference_example()))
    return out


def _reference_example() -> str:
    """docs/design.md §9.2: one sequence, T = 6, expected L_attn 0.0438661 / 0.1754645."""
    m = torch.ones(1, 6, dtype=torch.float64)
    dh = torch.tensor([[0.0, 0.5, 2.0, -1.0, 0.1, 0.0]], dtype=torch.float64)
    gate = torch.tensor([[1.0, 0, 1, 1, 0, 1]], dtype=torch.float64)
    mass = torch.tensor([[0.3, 0.2, 0.05, 0.01, 0.1, 0.02]], dtype=torch.float64)
    hp = {**HP, "advantage_floor": 0.02}
    lines = [
        "omega~ = [" + ", ".join(_col(obj.relevance_mask(dh, m)[0], "{:.6f}")) + "]",
        "nu~    = [" + ", ".join(_col(obj.inverse_relevance_weight(dh, gate, m)[0], "{:.6f}")) + "]",
    ]
    for adv, failed in ((0.01, True), (0.8, False)):
        a, f = torch.tensor([adv], dtype=torch.float64), torch.tensor([failed])
        loss = obj.attention_loss(mass, dh, gate, a, f, m, **hp)
        lines.append(f"A_hat = {adv}, failed = {failed}: L_attn = {loss.item():.7f}")
    return "\n".join(lines)


_T_DH = (
    "Δh_t = H(π_text-ref) − H(π_θ) per generated token (§3.3; here given). τ_T = τ_base·ln(max(T, 2)) uses each "
    "sequence's own completion length (eq. 1)."
)
_T_OMEGA = (
    "ω̃_t = min(T·softmax_t(|Δh_t|/τ_T), C_mask), detached. Σ_t ω̃ = T unless the clip binds: in sequence 1 the "
    "token with |Δh| = 6 would get more than C_mask = 5, so it is clipped and that row sums to less than 8."
)
_T_PG = (
    "ℓ_t is GRPO's clipped surrogate; eq. 2 averages it per sequence with weights ω̃ (column `wmean`, Σω̃ℓ/Σω̃) "
    "instead of 1/T (column `mean`), then takes the mean over the G sequences. The eq. 2 normalisation by Σω̃ keeps "
    "the clipped row of step 3 on the same scale."
)
_T_NU = (
    "ν̃_t = min(N_pos·softmax over POS-active tokens of −|Δh_t|/τ_T, C_mask), with τ_T from the full length T. "
    "Substantive tokens with *low* |Δh| get the most attention pressure. Sequence 4 has no POS-active token: ν̃ ≡ 0."
)
_T_PREF = (
    "f̂ = max(1[failed], α); s = max(|Â|, ε) for failed samples and |Â| otherwise; prefactor = min(f̂·s, C_pref). "
    "Successful samples keep a small weight α·|Â|."
)
_T_ATTN = (
    "L_attn = mean_b Σ_t c_t·(−log(a_t + ε)) with the detached coefficient c_t = prefactor/max(N_pos,1)·(t/T)^κ·ν̃_t "
    "(`attention_coefficients`); only a_t carries gradient. Sequence 4 (no POS-active token) contributes 0 but "
    "still counts in the mean over G = 4."
)
_T_REF = (
    "The toy sequence of docs/design.md §9.2 (T = 6, C_mask = 5, C_pref = 3, α = 0.1, "
    "ε = 0.02): the expected values are L_attn = 0.0438661 (failed, Â = 0.01) and 0.1754645 (successful, Â = 0.8)."
)


def render(markdown: bool = False) -> str:
    """The whole example as plain text, or as the markdown page ``docs/worked_example.md``."""
    parts = []
    if markdown:
        parts.append(
            "# Worked example of the MAPO objective\n\n"
            "Generated by `python -m mapo.objective.worked_example --markdown > docs/worked_example.md` (do not edit "
            "by hand; `tests/objective/test_objective.py` checks that this page matches what `mapo example` prints). "
            "Equation numbers refer to the paper (§3); all values come from `mapo.objective`."
        )
    for title, text, block in sections():
        if markdown:
            parts.append(f"## {title}\n\n{text}\n\n```text\n{block}\n```")
        else:
            parts.append(f"== {title} ==\n{block}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the worked example (``argv=None``: no options, as called by ``mapo example``)."""
    parser = argparse.ArgumentParser(prog="mapo example", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--markdown", action="store_true", help="print the docs/worked_example.md page instead"
    )
    args = parser.parse_args([] if argv is None else argv)
    sys.stdout.write(render(markdown=args.markdown))


if __name__ == "__main__":
    main(sys.argv[1:])
