"""The tone-melody task's offline consistency reward (r_cons without a judge) on handcrafted completions."""

from __future__ import annotations

import pytest

from mapo.rewards import accuracy_reward, format_reward
from mapo.synthetic.rewards import chain_is_consistent, synthetic_consistency_reward
from mapo.synthetic.rl import RL_BUDGETS
from mapo.synthetic.task import completion_text

FAITHFUL = "<think> first C second D third F fourth G fifth Bb sixth C</think><answer>C</answer>"


@pytest.mark.parametrize(
    ("completion", "expected", "why"),
    [
        (FAITHFUL, 1.0, "complete chain, answer = its last note"),
        (completion_text(["C", "D", "F", "G", "Bb", "C"]), 1.0, "the task's own reference completion"),
        (
            "<think> first C second D third F fourth G fifth Bb sixth C</think><answer>D</answer>",
            0.0,
            "unfaithful",
        ),
        ("<think> first C second D third F fourth G fifth Bb sixth", 0.0, "truncated mid-chain"),
        ("<think> first C second D third F fourth G fifth Bb sixth C</think>", 0.0, "missing answer"),
        (
            "<think> first C second D third F fourth G fifth Bb sixth C</think><answer></answer>",
            0.0,
            "empty answer",
        ),
        ("<think> first C second D third F fourth G</think><answer>G</answer>", 0.0, "chain cut short"),
        (
            "<think> first C second D third F fourth G sixth Bb fifth C</think><answer>C</answer>",
            0.0,
            "ordinals",
        ),
        (
            "<think> first C second D third F fourth G fifth Bb sixth E</think><answer>E</answer>",
            0.0,
            "not a note",
        ),
        (
            "<think> first C second D third F fourth G fifth Bb sixth C</think><answer> C </answer>",
            1.0,
            "spaces",
        ),
    ],
)
def test_handcrafted_completions(completion: str, expected: float, why: str) -> None:
    assert synthetic_consistency_reward([completion]) == [expected], why


def test_trl_signature_columns_and_conversational_format() -> None:
    """TRL passes dataset columns as keyword lists and may pass conversational completions."""
    unfaithful = FAITHFUL.replace("<answer>C", "<answer>G")
    completions = [FAITHFUL, [{"role": "assistant", "content": FAITHFUL}], unfaithful]
    notes = [["C", "D", "F", "G", "Bb", "C"]] * 3
    out = synthetic_consistency_reward(
        completions, notes=notes, answer=["C", "C", "C"], prompts=[None] * 3, trainer_state=None
    )
    assert out == [1.0, 1.0, 0.0]


def test_consistency_is_not_correctness() -> None:
    """A chain whose notes are all wrong but whose answer follows from it is consistent (the judge's role)."""
    wrong_but_consistent = completion_text(["G", "G", "G", "G", "G", "G"])
    assert synthetic_consistency_reward([wrong_but_consistent], notes=[["C"] * 6]) == [1.0]


def test_chain_length_follows_the_rows() -> None:
    eight = completion_text(["C", "D", "F", "G", "Bb", "C", "D", "F"])
    assert chain_is_consistent(eight, n_notes=8)
    assert not chain_is_consistent(eight, n_notes=6)
    assert synthetic_consistency_reward([eight], notes=[["C"] * 8]) == [1.0]


def test_three_note_shortcut_keeps_format_and_accuracy_but_not_consistency() -> None:
    """The shortcut GRPO learned on report seed 1 (README, "Where it falls short"): a three-note chain ending in the
    heard last note. Under λ = 2/1/1 it scores 3 on a trap item (accuracy 2 + format 1) against 2 for a complete
    chain that follows the prior; only the consistency reward sees it."""
    shortcut = "<think> first G second F third D</think><answer>D</answer>"
    # a complete chain that follows the prior; its answer is its (wrong) last note
    prior_following = completion_text(["G", "F", "D", "C", "Bb", "G"])
    rows = {
        "answer": ["D", "D"],
        "choices": [["C", "D", "F", "G", "Bb"]] * 2,
        "notes": [["G", "F", "D", "F", "G", "D"]] * 2,
    }
    completions = [shortcut, prior_following]
    acc = accuracy_reward(completions, **rows)
    fmt = format_reward(completions)
    cons = synthetic_consistency_reward(completions, **rows)
    assert (acc, fmt, cons) == ([1.0, 0.0], [1.0, 1.0], [0.0, 1.0])
    # the weights the demo trains with, in the order of its reward functions (accuracy, format, consistency)
    w_acc, w_fmt, w_cons = RL_BUDGETS["default"].reward_weights
    total = [w_acc * a + w_fmt * f + w_cons * c for a, f, c in zip(acc, fmt, cons)]
    assert total == [3.0, 2.0]
