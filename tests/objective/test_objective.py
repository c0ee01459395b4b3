"""Tests of mapo.objective (eq. 1-5) against naive per-sequence loops written here in plain python floats.

The naive versions below never call the module's helpers; they take python lists (one per sequence, completion
tokens only), so padding cannot influence them by construction.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mapo import objective as obj
from mapo.objective import worked_example

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
F64 = torch.float64
ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------------------------
# Naive references (python floats, one list per sequence)
# ----------------------------------------------------------------------------------------------------------------


def naive_advantages(rewards, g, eps=1e-4):
    out = []
    for i in range(0, len(rewards), g):
        grp = rewards[i : i + g]
        mu, sd = statistics.fmean(grp), statistics.stdev(grp)
        out += [(r - mu) / (sd + eps) for r in grp]
    return out


def naive_omega(dh, tau_base=1.0, clip=5.0):
    n = len(dh)
    if n == 0:
        return []
    tau = tau_base * math.log(max(n, 2))
    e = [math.exp(abs(x) / tau) for x in dh]
    z = sum(e)
    return [n * v / z if clip is None else min(n * v / z, clip) for v in e]


def naive_nu(dh, gate, tau_base=1.0, clip=5.0):
    tau = tau_base * math.log(max(len(dh), 2))  # full completion length T
    e = [math.exp(-abs(x) / tau) if g else 0.0 for x, g in zip(dh, gate)]
    n_pos, z = sum(gate), sum(e)
    if n_pos == 0:
        return [0.0] * len(dh)
    return [n_pos * v / z if clip is None else min(n_pos * v / z, clip) for v in e]


def naive_temporal(n, kappa=1.0):
    return [((t + 1) / n) ** kappa for t in range(n)]


def naive_surrogate(lp, old, adv, e_lo=0.2, e_hi=0.2):
    rho = math.exp(lp - old)
    return -min(rho * adv, min(max(rho, 1 - e_lo), 1 + e_hi) * adv)


def naive_pg(lps, olds, advs, ws, e_lo=0.2, e_hi=0.2):
    """advs[b] is a float (sequence-level) or a list (per token)."""
    total = 0.0
    for lp, old, adv, w in zip(lps, olds, advs, ws):
        a = adv if isinstance(adv, list) else [adv] * len(lp)
        num = sum(wi * naive_surrogate(x, o, ai, e_lo, e_hi) for x, o, ai, wi in zip(lp, old, a, w))
        den = sum(w)
        total += num / den if den > 0 else 0.0
    return total / len(lps)


def naive_kl(lps, refs):
    total = 0.0
    for lp, ref in zip(lps, refs):
        k = [math.exp(r - x) - (r - x) - 1 for x, r in zip(lp, ref)]
        total += sum(k) / len(k) if k else 0.0
    return total / len(lps)


def naive_prefactor(adv, failed, alpha=0.1, floor=0.1, cpref=3.0):
    f_hat = max(1.0 if failed else 0.0, alpha)
    s = max(abs(adv), floor) if failed else abs(adv)
    return f_hat * s if cpref is None else min(f_hat * s, cpref)


def naive_attention(masses, dhs, gates, advs, faileds, tau_base=1.0, clip=5.0, kappa=1.0, alpha=0.1, floor=0.1,
                    cpref=3.0, log_eps=1e-6):  # fmt: skip
    total = 0.0
    for a, dh, g, adv, failed in zip(masses, dhs, gates, advs, faileds):
        nu = naive_nu(dh, g, tau_base, clip)
        temp = naive_temporal(len(dh), kappa)
        pref = naive_prefactor(adv, failed, alpha, floor, cpref)
        s = sum(tw * v * -math.log(at + log_eps) for tw, v, at in zip(temp, nu, a))
        total += pref / max(sum(g), 1) * s
    return total / len(masses)


# ----------------------------------------------------------------------------------------------------------------
# Random ragged batches
# ----------------------------------------------------------------------------------------------------------------


def pad(rows, width, fill=0.0):
    return torch.tensor([list(r) + [fill] * (width - len(r)) for r in rows], dtype=F64)


def mask_of(lengths, width):
    return pad([[1.0] * n for n in lengths], width)


def garbage(x, mask, gen, nan=False):
    """x with every padded position replaced by large finite noise (or NaN/inf)."""
    noise = torch.randn(x.shape, generator=gen, dtype=F64) * 1e3
    if nan:
        noise[..., ::2] = float("nan")
        noise[..., 1::2] = float("inf")
    return torch.where(mask.bool(), x, noise)


@st.composite
def batches(draw, min_len=0, max_b=4, max_t=9, lengths=None):
    """A random padded float64 batch: dict of python lists (per sequence) and the matching padded tensors."""
    b = draw(st.integers(1, max_b))
    lens = draw(st.lists(st.integers(min_len, max_t), min_size=b, max_size=b)) if lengths is None else lengths
    width = max(max(lens), 1) + draw(st.integers(0, 2))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    dh_scale = draw(st.sampled_from([0.0, 0.3, 2.0, 8.0]))

    def rand(scale=1.0, shift=0.0):
        return [
            [(torch.randn((), generator=gen, dtype=F64) * scale + shift).item() for _ in range(n)]
            for n in lens
        ]

    lps = [[-abs(v) for v in row] for row in rand(1.5)]
    d = dict(
        lengths=lens,
        dh=rand(dh_scale),
        lp=lps,
        old=[[x + v for x, v in zip(r, s)] for r, s in zip(lps, rand(0.3))],
        ref=[[x + v for x, v in zip(r, s)] for r, s in zip(lps, rand(0.3))],
        gate=[[float(torch.rand((), generator=gen) < 0.5) for _ in range(n)] for n in lens],
        mass=[[torch.rand((), generator=gen).item() ** 3 for _ in range(n)] for n in lens],
        adv=[torch.randn((), generator=gen, dtype=F64).item() * 1.5 for _ in lens],
        failed=[bool(torch.rand((), generator=gen) < 0.5) for _ in lens],
    )
    m = mask_of(lens, width)
    t = {k: garbage(pad(d[k], width), m, gen) for k in ("dh", "lp", "old", "ref", "gate", "mass")}
    t["gate"] = torch.where(m.bool(), t["gate"], 7.0)  # the gate is read on completion positions only
    t.update(mask=m, adv=torch.tensor(d["adv"], dtype=F64), failed=torch.tensor(d["failed"]), gen=gen)
    return d, t


def rows(x, lengths):
    return [x[b, :n].tolist() for b, n in enumerate(lengths)]


def flat(x):
    x = x.tolist() if isinstance(x, torch.Tensor) else x
    return [v for item in x for v in flat(item)] if isinstance(x, (list, tuple)) else [x]


def close(a, b, tol=1e-9):
    """a ≈ b elementwise (nested lists/tensors are flattened; shapes must agree in length)."""
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb) and fa == pytest.approx(fb, rel=tol, abs=tol), (fa, fb)


# ----------------------------------------------------------------------------------------------------------------
# Every function against its naive loop
# ----------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(g=st.integers(2, 5), n_groups=st.integers(1, 3), seed=st.integers(0, 10_000), ties=st.booleans())
def test_group_advantages_matches_naive(g, n_groups, seed, ties):
    gen = torch.Generator().manual_seed(seed)
    r = (
        torch.randint(0, 3, (g * n_groups,), generator=gen).to(F64)
        if ties
        else torch.randn(g * n_groups, dtype=F64)
    )
    close(obj.group_advantages(r, g), naive_advantages(r.tolist(), g))


@SETTINGS
@given(data=batches(), tau_base=st.sampled_from([0.5, 1.0, 2.0]), clip=st.sampled_from([None, 1.5, 5.0]))
def test_relevance_mask_matches_naive(data, tau_base, clip):
    d, t = data
    omega = obj.relevance_mask(t["dh"], t["mask"], tau_base=tau_base, mask_clip=clip)
    assert bool((omega[t["mask"] == 0] == 0).all())
    close(rows(omega, d["lengths"]), [naive_omega(x, tau_base, clip) for x in d["dh"]])


@SETTINGS
@given(data=batches(), tau_base=st.sampled_from([0.5, 1.0, 2.0]), clip=st.sampled_from([None, 1.5, 5.0]))
def test_inverse_relevance_weight_matches_naive(data, tau_base, clip):
    d, t = data
    nu = obj.inverse_relevance_weight(t["dh"], t["gate"], t["mask"], tau_base=tau_base, mask_clip=clip)
    expected = [naive_nu(x, g, tau_base, clip) for x, g in zip(d["dh"], d["gate"])]
    close(rows(nu, d["lengths"]), expected)
    assert bool((nu[t["mask"] == 0] == 0).all())


@SETTINGS
@given(data=batches(), kappa=st.sampled_from([0.0, 0.5, 1.0, 2.0]))
def test_temporal_weight_matches_naive(data, kappa):
    d, t = data
    w = obj.temporal_weight(t["mask"], kappa)
    close(rows(w, d["lengths"]), [naive_temporal(n, kappa) for n in d["lengths"]])
    assert bool((w[t["mask"] == 0] == 0).all())


@SETTINGS
@given(data=batches(), per_token=st.booleans(), eps=st.sampled_from([(0.2, 0.2), (0.1, 0.3)]))
def test_policy_gradient_loss_matches_naive(data, per_token, eps):
    d, t = data
    m = t["mask"]
    omega = obj.relevance_mask(t["dh"], m)
    if per_token:
        adv_t = garbage(t["adv"].unsqueeze(1) * (1 + t["dh"].abs()), m, t["gen"])
        advs = rows(adv_t, d["lengths"])
    else:
        adv_t, advs = t["adv"], d["adv"]
    loss = obj.policy_gradient_loss(t["lp"], t["old"], adv_t, omega, m, *eps)
    expected = naive_pg(d["lp"], d["old"], advs, [naive_omega(x) for x in d["dh"]], *eps)
    close(loss.item(), expected)


@SETTINGS
@given(data=batches())
def test_kl_k3_matches_naive(data):
    d, t = data
    close(obj.kl_k3(t["lp"], t["ref"], t["mask"]).item(), naive_kl(d["lp"], d["ref"]))


@SETTINGS
@given(
    data=batches(),
    kappa=st.sampled_from([0.0, 1.0, 2.0]),
    floors=st.sampled_from([(0.1, 0.1, 3.0), (0.0, 0.02, None), (1.0, 0.0, 0.5)]),
)
def test_attention_loss_matches_naive(data, kappa, floors):
    d, t = data
    alpha, floor, cpref = floors
    hp = dict(kappa=kappa, fail_gate_floor=alpha, advantage_floor=floor, prefactor_clip=cpref)
    loss = obj.attention_loss(t["mass"], t["dh"], t["gate"], t["adv"], t["failed"], t["mask"], **hp)
    expected = naive_attention(d["mass"], d["dh"], d["gate"], d["adv"], d["failed"], kappa=kappa, alpha=alpha,
                               floor=floor, cpref=cpref)  # fmt: skip
    close(loss.item(), expected)
    pref = obj.attention_prefactor(t["adv"], t["failed"], fail_gate_floor=alpha, advantage_floor=floor,
                                   prefactor_clip=cpref)  # fmt: skip
    close(pref, [naive_prefactor(a, f, alpha, floor, cpref) for a, f in zip(d["adv"], d["failed"])])


@SETTINGS
@given(data=batches(), beta=st.sampled_from([0.0, 0.002, 0.5]), eta=st.sampled_from([0.0, 0.1]),
       relevance=st.booleans())  # fmt: skip
def test_mapo_loss_matches_naive(data, beta, eta, relevance):
    d, t = data
    loss, metrics = obj.mapo_loss(
        logps=t["lp"], old_logps=t["old"], ref_logps=t["ref"], advantages=t["adv"], delta_h=t["dh"],
        mask=t["mask"], audio_mass=t["mass"], pos_gate=t["gate"], failed=t["failed"], beta=beta, eta=eta,
        use_relevance_mask=relevance,
    )  # fmt: skip
    ws = [naive_omega(x) if relevance else [1.0] * len(x) for x in d["dh"]]
    pg = naive_pg(d["lp"], d["old"], d["adv"], ws)
    kl = naive_kl(d["lp"], d["ref"])
    attn = naive_attention(d["mass"], d["dh"], d["gate"], d["adv"], d["failed"])
    close(loss.item(), pg + beta * kl + eta * attn)
    close(metrics["pg_loss"], pg)
    close(metrics["kl"], kl)
    assert all(isinstance(v, float) for v in metrics.values())
    assert ("attn_loss" in metrics) == (eta != 0) and ("omega_max" in metrics) == relevance
    if eta:
        close(metrics["attn_loss"], attn)
        close(metrics["failed_frac"], sum(d["failed"]) / len(d["failed"]))
    if relevance and sum(d["lengths"]):
        close(metrics["omega_max"], max(max(naive_omega(x), default=0.0) for x in d["dh"]))


# ----------------------------------------------------------------------------------------------------------------
# Invariants
# ----------------------------------------------------------------------------------------------------------------


@SETTINGS
@given(data=batches(min_len=1))
def test_weights_sum_to_length_without_clip(data):
    d, t = data
    omega = obj.relevance_mask(t["dh"], t["mask"], mask_clip=None)
    close(omega.sum(1), [float(n) for n in d["lengths"]])
    nu = obj.inverse_relevance_weight(t["dh"], t["gate"], t["mask"], mask_clip=None)
    close(nu.sum(1), [sum(g) for g in d["gate"]])


@SETTINGS
@given(data=batches(), extra=st.integers(1, 3), nan=st.booleans())
def test_padding_never_changes_results(data, extra, nan):
    """Extra right padding and any garbage under mask 0 (finite, NaN or inf) change no value and no gradient."""
    d, t = data
    m = t["mask"]
    b, width = m.shape
    m2 = torch.cat([m, torch.zeros(b, extra, dtype=F64)], dim=1)

    def widen(x):
        return garbage(torch.cat([x, torch.zeros(b, extra, dtype=F64)], dim=1), m2, t["gen"], nan=nan)

    def run(mask, f):
        lp = f(t["lp"]).requires_grad_(True)
        mass = f(t["mass"]).requires_grad_(True)
        kw = dict(
            logps=lp, old_logps=f(t["old"]), ref_logps=f(t["ref"]), advantages=t["adv"], delta_h=f(t["dh"])
        )
        loss, metrics = obj.mapo_loss(
            **kw, mask=mask, audio_mass=mass, pos_gate=f(t["gate"]), failed=t["failed"]
        )
        g_lp, g_mass = torch.autograd.grad(loss, [lp, mass])
        outs = [
            obj.relevance_mask(f(t["dh"]), mask),
            obj.inverse_relevance_weight(f(t["dh"]), f(t["gate"]), mask),
            obj.temporal_weight(mask),
            obj.fold_weights_into_advantages(t["adv"], obj.relevance_mask(f(t["dh"]), mask), mask),
        ]
        return loss, metrics, g_lp, g_mass, outs

    loss1, met1, g1, gm1, outs1 = run(m, lambda x: x)
    loss2, met2, g2, gm2, outs2 = run(m2, widen)
    close(loss2.item(), loss1.item(), 1e-12)
    assert met1 == pytest.approx(met2, rel=1e-12, abs=1e-12)
    for x1, x2 in zip([g1, gm1, *outs1], [g2, gm2, *outs2]):
        assert bool(torch.isfinite(x2).all())
        torch.testing.assert_close(x2[:, :width], x1, rtol=1e-12, atol=1e-12)
        assert bool((x2[:, width:] == 0).all())


def test_omega_is_one_when_delta_h_is_zero_and_pg_is_plain_grpo():
    gen = torch.Generator().manual_seed(0)
    m = mask_of([5, 1, 3, 0], 6)
    omega = obj.relevance_mask(torch.zeros(4, 6, dtype=F64), m)
    torch.testing.assert_close(omega, m)
    lp = -torch.rand(4, 6, generator=gen, dtype=F64) * 2
    old = lp + torch.randn(4, 6, generator=gen, dtype=F64) * 0.3
    adv = torch.randn(4, generator=gen, dtype=F64)
    plain = obj.policy_gradient_loss(lp, old, adv, m, m)
    close(obj.policy_gradient_loss(lp, old, adv, omega, m).item(), plain.item(), 1e-14)
    loss, _ = obj.mapo_loss(
        logps=lp, old_logps=old, advantages=adv, mask=m, beta=0, eta=0, use_relevance_mask=False
    )
    close(loss.item(), plain.item(), 1e-14)
    # eq. 2 is invariant to the scale of the weights, also below Σ w = 1 (the reference clamps Σ w at 1 instead)
    close(obj.policy_gradient_loss(lp, old, adv, 0.01 * m, m).item(), plain.item(), 1e-12)
    # an empty completion contributes 0 but counts in the mean over B (TRL's max(1, Σ m))
    close(plain.item(), naive_pg(rows(lp, [5, 1, 3, 0]), rows(old, [5, 1, 3, 0]), adv.tolist(),
                                 [[1.0] * n for n in [5, 1, 3, 0]]))  # fmt: skip


def trl_grpo_loss(logps, old_logps, advantages, mask, beta=0.0, ref_logps=None, eps_low=0.2, eps_high=0.2):
    """TRL 1.16 GRPOTrainer._compute_loss for loss_type="grpo", token-level IS, written out (not importable)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(logps - old_logps)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
    return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


@SETTINGS
@given(data=batches(), beta=st.sampled_from([0.0, 0.04]), clip=st.sampled_from([None, 1.2, 5.0]))
def test_folded_advantages_reproduce_eq2_in_trl_grpo(data, beta, clip):
    d, t = data
    m = t["mask"]
    clean = {k: torch.where(m.bool(), t[k], 0.0) for k in ("lp", "old", "ref")}  # TRL needs finite padding
    omega = obj.relevance_mask(t["dh"], m, mask_clip=clip)
    folded = obj.fold_weights_into_advantages(t["adv"], omega, m)
    close(folded.sum(1), [a * n for a, n in zip(d["adv"], d["lengths"])])  # Σ_t w' = T per sequence
    lp1 = clean["lp"].clone().requires_grad_(True)
    lp2 = clean["lp"].clone().requires_grad_(True)
    ours, _ = obj.mapo_loss(logps=lp1, old_logps=clean["old"], ref_logps=clean["ref"], advantages=t["adv"],
                            delta_h=t["dh"], mask=m, beta=beta, eta=0.0, mask_clip=clip)  # fmt: skip
    trl = trl_grpo_loss(lp2, clean["old"], folded, m, beta=beta, ref_logps=clean["ref"])
    close(trl.item(), ours.item(), 1e-12)
    torch.testing.assert_close(torch.autograd.grad(trl, lp2)[0], torch.autograd.grad(ours, lp1)[0])


def test_fold_zero_weights_row_gives_zero_advantages():
    m = mask_of([3, 2], 3)
    w = torch.tensor([[0.0, 0.0, 0.0], [2.0, 6.0, 0.0]], dtype=F64)
    folded = obj.fold_weights_into_advantages(torch.tensor([1.0, -2.0], dtype=F64), w, m)
    torch.testing.assert_close(folded, torch.tensor([[0.0, 0.0, 0.0], [-1.0, -3.0, 0.0]], dtype=F64))


def test_attention_gradient_flows_only_through_audio_mass():
    gen = torch.Generator().manual_seed(1)
    m = mask_of([6, 4], 6)
    mass = torch.rand(2, 6, generator=gen, dtype=F64).requires_grad_(True)
    dh = torch.randn(2, 6, generator=gen, dtype=F64).requires_grad_(True)
    adv = torch.tensor([0.7, -1.2], dtype=F64, requires_grad=True)
    gate = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0]])
    failed = torch.tensor([True, False])
    loss = obj.attention_loss(mass, dh, gate, adv, failed, m)
    g_mass, g_dh, g_adv = torch.autograd.grad(loss, [mass, dh, adv], allow_unused=True)
    assert g_dh is None and g_adv is None
    coef = obj.attention_coefficients(dh, gate, adv, failed, m)
    assert not coef.requires_grad
    torch.testing.assert_close(g_mass, -coef / (mass.detach() + 1e-6) / 2)  # d/da of mean_b Σ c·(−log(a + ε))
    assert bool((g_mass[(gate * m) == 1] != 0).all()) and bool((g_mass[(gate * m) == 0] == 0).all())
    split = obj.attention_loss_from_coefficients(mass, coef, log_eps=1e-6)
    close(split.item(), loss.item(), 1e-15)


def test_single_token_empty_gate_and_equal_rewards():
    # T = 1: ω̃ = ν̃ = temporal weight = 1; L_attn = prefactor · (−log(a + ε)).
    m1 = torch.ones(1, 1, dtype=F64)
    dh1 = torch.tensor([[4.0]], dtype=F64)
    torch.testing.assert_close(obj.relevance_mask(dh1, m1), m1)
    torch.testing.assert_close(obj.inverse_relevance_weight(dh1, m1, m1), m1)
    torch.testing.assert_close(obj.temporal_weight(m1, kappa=3.0), m1)
    loss = obj.attention_loss(torch.tensor([[0.25]], dtype=F64), dh1, m1, torch.tensor([2.0], dtype=F64),
                              torch.tensor([True]), m1)  # fmt: skip
    close(loss.item(), 2.0 * -math.log(0.25 + 1e-6))
    # Empty POS gate: ν̃ ≡ 0, the sequence contributes 0 but still counts in the mean over B.
    m = mask_of([3, 3], 3)
    dh = torch.tensor([[0.1, 0.5, 2.0], [0.3, 0.0, 1.0]], dtype=F64)
    gate = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64)
    mass = torch.full((2, 3), 0.1, dtype=F64)
    adv, failed = torch.tensor([1.0, 1.0], dtype=F64), torch.tensor([True, True])
    assert bool((obj.inverse_relevance_weight(dh, gate, m)[1] == 0).all())
    both = obj.attention_loss(mass, dh, gate, adv, failed, m)
    first = obj.attention_loss(mass[:1], dh[:1], gate[:1], adv[:1], failed[:1], m[:1])
    close(both.item(), first.item() / 2, 1e-14)
    # All-equal rewards: Â = 0, PG = 0; failed samples keep the floor ε, successful ones get nothing.
    adv0 = obj.group_advantages(torch.full((4,), 2.0, dtype=F64), 4)
    assert bool((adv0 == 0).all())
    m4 = mask_of([3, 3, 3, 3], 3)
    g4 = torch.ones(4, 3, dtype=F64)
    fail4 = torch.tensor([True, False, True, False])
    mass4 = torch.full((4, 3), 0.1, dtype=F64)
    pref = obj.attention_prefactor(adv0, fail4, advantage_floor=0.1)
    close(pref, [0.1, 0.0, 0.1, 0.0])
    attn = obj.attention_loss(mass4, torch.zeros(4, 3, dtype=F64), g4, adv0, fail4, m4, advantage_floor=0.1)
    expected = naive_attention([[0.1] * 3] * 4, [[0.0] * 3] * 4, [[1] * 3] * 4, [0.0] * 4, fail4.tolist())
    assert attn.item() > 0
    close(attn.item(), expected)
    lp = torch.full((4, 3), -1.0, dtype=F64)
    assert obj.policy_gradient_loss(lp, lp - 0.1, adv0, m4, m4).item() == 0.0


def test_bool_int_and_low_precision_inputs():
    m = torch.tensor([[True, True, False]])
    dh = torch.tensor([[1.0, 0.0, 9.0]], dtype=torch.bfloat16)
    omega = obj.relevance_mask(dh, m)
    assert omega.dtype == torch.float32
    close(omega[0].tolist(), naive_omega([1.0, 0.0]) + [0.0], 1e-6)
    nu = obj.inverse_relevance_weight(dh, torch.tensor([[1, 1, 0]]), m)
    close(nu[0].tolist(), naive_nu([1.0, 0.0], [1, 1]) + [0.0], 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Numbers of docs/design.md §9.2
# ----------------------------------------------------------------------------------------------------------------


def test_reference_worked_example_16_3():
    m = torch.ones(1, 6, dtype=F64)
    dh = torch.tensor([[0.0, 0.5, 2.0, -1.0, 0.1, 0.0]], dtype=F64)
    gate = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 1.0]], dtype=F64)
    mass = torch.tensor([[0.3, 0.2, 0.05, 0.01, 0.1, 0.02]], dtype=F64)
    hp = dict(
        tau_base=1.0, mask_clip=5.0, kappa=1.0, fail_gate_floor=0.1, advantage_floor=0.02, prefactor_clip=3.0
    )
    close(obj.length_temperature(m).item(), 1.791759, 1e-6)
    omega = obj.relevance_mask(dh, m)
    close(omega[0], [0.653599, 0.863980, 1.995630, 1.142078, 0.691114, 0.653599], 1e-6)
    close((omega / omega.sum())[0], [0.108933, 0.143997, 0.332605, 0.190346, 0.115186, 0.108933], 1e-5)
    nu = obj.inverse_relevance_weight(dh, gate, m)
    close(nu[0], [1.379403, 0.0, 0.451775, 0.789418, 0.0, 1.379403], 1e-6)
    close(nu.sum().item(), 4.0)
    close(obj.temporal_weight(m)[0], [t / 6 for t in range(1, 7)])
    failed = torch.tensor([True])
    adv = torch.tensor([0.01], dtype=F64)
    close(obj.attention_prefactor(adv, failed, fail_gate_floor=0.1, advantage_floor=0.02).item(), 0.02)
    coef = obj.attention_coefficients(dh, gate, adv, failed, m, **hp)
    o_t = coef * -torch.log(mass + 1e-6) * 4  # the reference lists o_t before the 1/N_pos (N_pos = 4)
    close(o_t[0], [0.005536, 0.0, 0.013534, 0.048471, 0.0, 0.107924], 1e-3)
    close(obj.attention_loss(mass, dh, gate, adv, failed, m, **hp).item(), 0.0438661, 1e-6)
    ok = obj.attention_loss(mass, dh, gate, torch.tensor([0.8], dtype=F64), torch.tensor([False]), m, **hp)
    close(ok.item(), 0.1754645, 1e-6)


def test_reference_bounds_16_2():
    for n, tau in [(10, 2.3026), (100, 4.6052), (500, 6.2146), (1000, 6.9078), (1200, 7.0901)]:
        close(obj.length_temperature(torch.ones(1, n)).item(), tau, 2e-5)
    for n, r1, r3 in [(10, 1.544, 3.680), (100, 1.243, 1.918), (1000, 1.156, 1.544)]:
        dh = torch.zeros(2, n, dtype=F64)
        dh[0, 0], dh[1, 0] = 1.0, 3.0
        omega = obj.relevance_mask(dh, torch.ones(2, n, dtype=F64))
        close((omega[:, 0] / omega[:, 1]).tolist(), [r1, r3], 5e-4)
    dh = torch.zeros(1, 500, dtype=F64)
    dh[0, 0] = 3.0
    omega = obj.relevance_mask(dh, torch.ones(1, 500, dtype=F64))
    close(omega[0, 0].item(), 1.6185, 5e-5)
    close(omega[0, 1:].tolist(), [0.99876] * 499, 5e-6)
    # |Â| ≤ (G−1)/√G for G = 8 with the unbiased std
    adv = obj.group_advantages(torch.tensor([1.0] + [0.0] * 7, dtype=F64), 8)
    assert adv.abs().max().item() <= 7 / math.sqrt(8)
    close(adv.abs().max().item(), 7 / math.sqrt(8), 5e-4)  # the + 1e-4 in the denominator lowers it slightly


# ----------------------------------------------------------------------------------------------------------------
# Errors name the argument
# ----------------------------------------------------------------------------------------------------------------

M = mask_of([3, 2], 3)
X = torch.zeros(2, 3, dtype=F64)
A = torch.tensor([0.5, -0.5], dtype=F64)
FAIL = torch.tensor([True, False])
NAN_X = torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]], dtype=F64)
ATT = dict(audio_mass=X + 0.5, delta_h=X, pos_gate=M, advantages=A, failed=FAIL, mask=M)
MAPO = dict(logps=X, old_logps=X, advantages=A, mask=M, delta_h=X, beta=0.0, eta=0.0)

ERROR_CASES = [
    ("mask", lambda: obj.relevance_mask(X, M * 2)),
    ("mask", lambda: obj.temporal_weight(torch.ones(3))),
    ("mask", lambda: obj.temporal_weight(torch.ones(0, 3))),
    ("delta_h", lambda: obj.relevance_mask(torch.zeros(2, 4), M)),
    ("delta_h", lambda: obj.relevance_mask(NAN_X, M)),
    ("tau_base", lambda: obj.relevance_mask(X, M, tau_base=-1.0)),
    ("tau_base", lambda: obj.inverse_relevance_weight(X, M, M, tau_base=0.0)),
    ("mask_clip", lambda: obj.relevance_mask(X, M, mask_clip=-1.0)),
    ("mask_clip", lambda: obj.relevance_mask(X, M, mask_clip=0)),
    ("pos_gate", lambda: obj.inverse_relevance_weight(X, M * 0.5, M)),
    ("pos_gate", lambda: obj.inverse_relevance_weight(X, torch.ones(2, 2), M)),
    ("kappa", lambda: obj.temporal_weight(M, kappa=-0.5)),
    ("kappa", lambda: obj.attention_loss(**ATT, kappa=float("nan"))),
    ("group_size", lambda: obj.group_advantages(torch.zeros(4), 3)),
    ("group_size", lambda: obj.group_advantages(torch.zeros(4), 0)),
    ("group_size", lambda: obj.group_advantages(torch.zeros(4), 1)),
    ("rewards", lambda: obj.group_advantages(torch.tensor([0.0, float("nan")]), 2)),
    ("rewards", lambda: obj.group_advantages(torch.zeros(2, 2), 2)),
    ("eps", lambda: obj.group_advantages(torch.zeros(2), 2, eps=0.0)),
    ("logps", lambda: obj.policy_gradient_loss(NAN_X, X, A, M, M)),
    ("old_logps", lambda: obj.policy_gradient_loss(X, X[:1], A, M, M)),
    ("advantages", lambda: obj.policy_gradient_loss(X, X, torch.zeros(3), M, M)),
    ("advantages", lambda: obj.policy_gradient_loss(X, X, torch.zeros(2, 3, 1), M, M)),
    ("weights", lambda: obj.policy_gradient_loss(X, X, A, -M, M)),
    ("epsilon_low", lambda: obj.policy_gradient_loss(X, X, A, M, M, epsilon_low=-0.1)),
    ("epsilon_high", lambda: obj.policy_gradient_loss(X, X, A, M, M, epsilon_high=-0.1)),
    ("ref_logps", lambda: obj.kl_k3(X, torch.zeros(3, 3), M)),
    ("weights", lambda: obj.fold_weights_into_advantages(A, torch.zeros(2, 4), M)),
    ("audio_mass", lambda: obj.attention_loss(**{**ATT, "audio_mass": X - 0.5})),
    ("audio_mass", lambda: obj.attention_loss(**{**ATT, "audio_mass": NAN_X})),
    ("advantages", lambda: obj.attention_loss(**{**ATT, "advantages": X})),
    ("failed", lambda: obj.attention_loss(**{**ATT, "failed": torch.tensor([2, 0])})),
    ("failed", lambda: obj.attention_prefactor(A, torch.tensor([True]))),
    ("fail_gate_floor", lambda: obj.attention_loss(**ATT, fail_gate_floor=1.5)),
    ("advantage_floor", lambda: obj.attention_loss(**ATT, advantage_floor=-0.1)),
    ("prefactor_clip", lambda: obj.attention_loss(**ATT, prefactor_clip=0.0)),
    ("log_eps", lambda: obj.attention_loss(**ATT, log_eps=0.0)),
    ("coef", lambda: obj.attention_loss_from_coefficients(X, -M)),
    ("audio_mass", lambda: obj.attention_loss_from_coefficients(torch.zeros(2, 2), M)),
    ("beta", lambda: obj.mapo_loss(**{**MAPO, "beta": -1.0})),
    ("eta", lambda: obj.mapo_loss(**{**MAPO, "eta": -1.0})),
    ("ref_logps", lambda: obj.mapo_loss(**{**MAPO, "beta": 0.1})),
    ("audio_mass", lambda: obj.mapo_loss(**{**MAPO, "eta": 0.1, "pos_gate": M, "failed": FAIL})),
    ("delta_h", lambda: obj.mapo_loss(**{**MAPO, "delta_h": None})),
    ("mask_clip", lambda: obj.mapo_loss(**MAPO, mask_clip=-2.0)),
    ("kappa", lambda: obj.mapo_loss(**MAPO, kappa=-1.0)),
    ("prefactor_clip", lambda: obj.mapo_loss(**MAPO, prefactor_clip=-1.0)),
    ("mode", lambda: obj.agg_loss(X, M, "sum")),
]


@pytest.mark.parametrize("name,call", ERROR_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ERROR_CASES)])
def test_bad_input_raises_value_error_naming_the_argument(name, call):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(name), str(err.value)


def test_type_errors_and_disabled_clips():
    with pytest.raises(TypeError, match="delta_h"):
        obj.relevance_mask([[0.0, 1.0]], torch.ones(1, 2))
    # clip=None / prefactor_clip=None disable the caps (the reference's "0 = off")
    dh = torch.tensor([[9.0, 0.0, 0.0]], dtype=F64)
    close(
        obj.relevance_mask(dh, torch.ones(1, 3), mask_clip=None)[0], naive_omega([9.0, 0.0, 0.0], clip=None)
    )
    close(obj.attention_prefactor(torch.tensor([9.0]), torch.tensor([True]), prefactor_clip=None).item(), 9.0)


# ----------------------------------------------------------------------------------------------------------------
# Worked example: runs, and docs/worked_example.md agrees with what it prints
# ----------------------------------------------------------------------------------------------------------------


def test_worked_example_runs_and_doc_matches():
    buf = io.StringIO()
    with redirect_stdout(buf):
        worked_example.main()
    printed = buf.getvalue()
    for expected in ("L_attn = 0.0438661", "L_attn = 0.1754645", "L_MAPO", "omega~ = [0.653599"):
        assert expected in printed
    doc = (ROOT / "docs" / "worked_example.md").read_text(encoding="utf-8")
    regen = "regenerate with: python -m mapo.objective.worked_example --markdown > docs/worked_example.md"
    assert doc == worked_example.render(markdown=True), regen
    blocks = re.findall(r"```text\n(.*?)\n```", doc, flags=re.S)
    assert len(blocks) == len(worked_example.sections())
    for block in blocks:
        assert block in printed, regen
    # the printed numbers are the library's: the total equals mapo_loss recomputed here
    total = float(re.search(r"\n\s+= ([-0-9.]+)\n", printed).group(1))
    x = worked_example.inputs()
    adv = obj.group_advantages(x["rewards"], 4)
    loss, _ = obj.mapo_loss(**{k: x[k] for k in ("logps", "old_logps", "ref_logps", "delta_h", "mask",
                                                 "audio_mass", "pos_gate", "failed")}, advantages=adv)  # fmt: skip
    close(total, loss.item(), 1e-6)


def test_cli_example_command():
    from mapo.cli import main as cli_main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli_main(["example"]) == 0
    assert "== Step 10 - total (eq. 5) ==" in buf.getvalue()
