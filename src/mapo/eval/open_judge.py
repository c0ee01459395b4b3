"""LLM-judge grading of MMAU-Pro's open-ended items on a 1-5 scale (Table 3, "Open").

The judge is any OpenAI-compatible chat-completions server reached through
:class:`mapo.rewards.JudgeClient` (the official script runs Qwen2.5-7B-Instruct). It grades the model's answer
against the reference answer on correctness, relevance, completeness and clarity, and gives an OVERALL grade;
the item's score is OVERALL / 5, as in the official script, so the category score is comparable to the paper's.

Parsing is stricter than the official script's (which defaults a missing grade to 3 and replaces an OVERALL of
exactly 3 by the mean of the criteria): OVERALL is used when present; otherwise the mean of the four criteria
when all four are present; otherwise the reply is a judge failure and the item is unscored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["CRITERIA", "OPEN_JUDGE_PROMPT", "grade_open", "parse_grades"]

CRITERIA: tuple[str, ...] = ("correctness", "relevance", "completeness", "clarity")

OPEN_JUDGE_PROMPT = """You grade answers to questions about an audio recording. You cannot hear the audio; compare \
the model's answer with the reference answer.

Question: {question}

Reference answer: {reference}

Model answer: {response}

Give each criterion an integer grade from 1 (worst) to 5 (best):
1. CORRECTNESS: does the answer agree with the facts in the reference answer?
2. RELEVANCE: does it address the question that was asked?
3. COMPLETENESS: does it cover the important points of the reference answer?
4. CLARITY: is it clear and well structured?

Reply with exactly these five lines, each followed by a one-sentence justification:
CORRECTNESS: <grade> - <why>
RELEVANCE: <grade> - <why>
COMPLETENESS: <grade> - <why>
CLARITY: <grade> - <why>
OVERALL: <grade from 1 to 5, decimals allowed> - <summary>"""

_GRADE = {
    name: re.compile(rf"{name}\**\s*[:=]\s*\**\s*([0-9]+(?:\.[0-9]+)?)", re.IGNORECASE)
    for name in (*CRITERIA, "overall")
}
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)


def parse_grades(reply: str) -> dict[str, float] | None:
    """Grades found in a judge reply, with ``"overall"`` filled from the criteria when missing.

    Returns ``None`` when no usable OVERALL can be formed (see the module docstring) or a grade is outside 1-5.
    """
    text = _THINK.sub(" ", reply)
    grades: dict[str, float] = {}
    for name, pattern in _GRADE.items():
        m = pattern.search(text)
        if m:
            value = float(m.group(1))
            if not 1.0 <= value <= 5.0:
                return None
            grades[name] = value
    if "overall" not in grades:
        if not all(c in grades for c in CRITERIA):
            return None
        grades["overall"] = sum(grades[c] for c in CRITERIA) / len(CRITERIA)
    return grades


def grade_open(
    client: Any, items: Sequence[tuple[str, str, str]], template: str = OPEN_JUDGE_PROMPT
) -> list[dict[str, Any]]:
    """Grade ``(question, reference, response)`` triples with ``client`` (a :class:`mapo.rewards.JudgeClient`).

    Returns one dict per item: ``{"overall", "grades", "reply"}`` on success, ``{"error": ...}`` on failure
    (server unreachable, or a reply without usable grades).
    """
    prompts = [template.format(question=q, reference=ref, response=resp) for q, ref, resp in items]
    replies = client.request_many(prompts)
    out: list[dict[str, Any]] = []
    for reply in replies:
        if reply.text is None:
            out.append({"error": f"judge request failed: {reply.error}"})
            continue
        grades = parse_grades(reply.text)
        if grades is None:
            out.append({"error": "judge reply has no usable 1-5 grades", "reply": reply.text[:500]})
        else:
            out.append({"overall": grades["overall"], "grades": grades, "reply": reply.text[:2000]})
    return out
