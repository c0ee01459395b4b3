"""r_cons of eq. 6: an LLM consistency judge reached over the OpenAI-compatible chat-completions API.

The paper queries a frozen Qwen3-30B-A3B-Instruct on the vLLM rollout server with the appendix-B prompt and
rewards a "YES" (reasoning and final answer agree, reasoning not cut off). Any server that implements
``POST {base_url}/chat/completions`` works (vLLM, SGLang, TGI, llama.cpp, OpenAI).

Failure policy: a judge that cannot be reached (connection refused, timeout, HTTP 5xx/429 after the retries) or
whose reply is neither YES nor NO yields ``None`` for that completion, which TRL turns into NaN and leaves out
of the weighted sum. One warning per batch gives the counts, and ``consistency_judge/failed_fraction`` is logged
through TRL's ``log_metric`` hook. Training never crashes because of the judge; a judge that is not configured
at all is a set-up error (``ValueError``), not a degraded path.

Configuration defaults come from environment variables with the prefix ``MAPO_JUDGE_`` (see
:meth:`JudgeClient.from_env` and ``docs/rewards.md``).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mapo.rewards.accuracy import accuracy_reward
from mapo.rewards.extraction import completion_text, extract_answer, extract_think

__all__ = [
    "CONSISTENCY_PROMPT",
    "DEFAULT_JUDGE_MODEL",
    "ENV_PREFIX",
    "ConsistencyJudge",
    "JudgeClient",
    "JudgeReply",
    "consistency_reward",
    "parse_yes_no",
    "render_prompt",
]

logger = logging.getLogger(__name__)

#: Appendix B, "Reasoning Consistency Evaluator Prompt", verbatim from the paper (typographic quotes included).
#: The public release lays the same words out with blank lines and ASCII quotes (docs/rewards.md).
CONSISTENCY_PROMPT = (
    "You are a reasoning consistency evaluator. Given a model’s thinking process and its final answer, your task "
    "is to evaluate it against two specific failure modes. Thinking Process:\n"
    "{think_text}\n"
    "Final Answer:\n"
    "{answer_text}\n"
    "Respond “NO” ONLY if at least one of the following is true: 1. The conclusion reached in the thinking "
    "process does not agree with or contradicts the final answer. 2. The thinking process is visibly incomplete "
    "or cut off prematurely. If neither of these failure modes is present, respond “YES”. Only output YES or NO."
)

#: The checker model of the paper (§4) as named in the public launcher.
DEFAULT_JUDGE_MODEL = "Qwen/Qwen3-30B-A3B-Instruct-2507"
#: Prefix of the environment variables read by :meth:`JudgeClient.from_env`.
ENV_PREFIX = "MAPO_JUDGE_"

_PLACEHOLDERS = re.compile(r"\{(think_text|answer_text)\}")
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_VERDICT = re.compile(r"^[\W_]*(yes|no)(?![a-z])", re.IGNORECASE)
_RETRYABLE_STATUS = frozenset({408, 409, 425, 429})


def render_prompt(template: str, think_text: str, answer_text: str) -> str:
    """Fill ``{think_text}`` and ``{answer_text}`` in one pass (braces inside the texts are left alone)."""
    values = {"think_text": think_text, "answer_text": answer_text}
    return _PLACEHOLDERS.sub(lambda m: values[m.group(1)], template)


def parse_yes_no(reply: str) -> float | None:
    """1.0 for YES, 0.0 for NO, ``None`` for anything else.

    Reasoning blocks (``<think>…</think>``) are removed first. The verdict is the first word of the reply, or
    failing that the first word of its last non-empty line, ignoring case, markdown and quotes ("**Yes.**" and
    "No, the answer ..." parse; "Not sure", "Maybe" and "" do not).
    """
    text = _THINK_BLOCK.sub(" ", reply)
    if "</think>" in text.lower():  # the template opened the block in the prompt
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in (text.strip(), lines[-1] if lines else ""):
        m = _VERDICT.match(candidate)
        if m:
            return 1.0 if m.group(1).lower() == "yes" else 0.0
    return None


@dataclass(frozen=True)
class JudgeReply:
    """Outcome of one judge request: the reply text, or ``None`` and the last error."""

    text: str | None
    error: str | None
    attempts: int


class _Failure(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


def _env(prefix: str, name: str) -> str | None:
    value = os.environ.get(prefix + name)
    return value if value not in (None, "") else None


class JudgeClient:
    """Minimal client of an OpenAI-compatible ``/chat/completions`` endpoint (stdlib ``urllib``, thread-safe).

    Args:
        base_url: server root including the API prefix, e.g. ``http://rollout-node:8000/v1``; requests go to
            ``{base_url}/chat/completions``.
        model: the served model name (vLLM's ``--served-model-name``).
        api_key: sent as ``Authorization: Bearer …`` when given (vLLM's ``--api-key``).
        timeout: socket timeout in seconds, per attempt.
        max_retries: extra attempts after the first one, on connection errors, timeouts, HTTP 5xx/408/429 and
            malformed bodies. Other HTTP 4xx (bad model name, bad key) fail at once.
        backoff: the k-th retry waits ``min(backoff · 2^k, max_backoff)`` seconds (k = 0, 1, ...).
        max_workers: concurrent requests in :meth:`complete_many`.
        temperature, max_tokens: sampling settings of the judge (paper/release: greedy, 16 tokens). A judge that
            thinks before answering needs a larger ``max_tokens``.
        extra_body: extra JSON fields merged into every request (e.g. ``{"chat_template_kwargs": {...}}``).
    """

    def __init__(
        self,
        base_url: str,
        model: str = DEFAULT_JUDGE_MODEL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_workers: int = 16,
        temperature: float = 0.0,
        max_tokens: int = 16,
        extra_body: dict[str, Any] | None = None,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must start with http:// or https:// (e.g. http://host:8000/v1), got {base_url!r}"
            )
        if not model:
            raise ValueError("model must name the served judge model (vLLM --served-model-name)")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0 or backoff < 0 or max_backoff < 0:
            raise ValueError("max_retries, backoff and max_backoff must be >= 0")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_workers = int(max_workers)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:
        return f"JudgeClient(url={self.url!r}, model={self.model!r}, timeout={self.timeout}, retries={self.max_retries})"

    @staticmethod
    def env_configured(prefix: str = ENV_PREFIX) -> bool:
        """Whether ``{prefix}BASE_URL`` is set (the one variable without a default)."""
        return _env(prefix, "BASE_URL") is not None

    @classmethod
    def from_env(cls, prefix: str = ENV_PREFIX, **overrides: Any) -> JudgeClient:
        """Build a client from ``{prefix}BASE_URL`` (required), ``MODEL``, ``API_KEY``, ``TIMEOUT``,
        ``MAX_RETRIES``, ``BACKOFF``, ``CONCURRENCY`` (max_workers) and ``MAX_TOKENS``; keyword overrides win."""
        kwargs: dict[str, Any] = {}
        for var, key, conv in (
            ("BASE_URL", "base_url", str),
            ("MODEL", "model", str),
            ("API_KEY", "api_key", str),
            ("TIMEOUT", "timeout", float),
            ("MAX_RETRIES", "max_retries", int),
            ("BACKOFF", "backoff", float),
            ("CONCURRENCY", "max_workers", int),
            ("MAX_TOKENS", "max_tokens", int),
        ):
            raw = _env(prefix, var)
            if raw is not None:
                try:
                    kwargs[key] = conv(raw)
                except ValueError as err:
                    raise ValueError(f"{prefix}{var}={raw!r} is not a valid {conv.__name__}") from err
        kwargs.update(overrides)
        if "base_url" not in kwargs:
            raise ValueError(
                f"The consistency judge is not configured: set {prefix}BASE_URL (e.g. "
                f"{prefix}BASE_URL=http://localhost:8000/v1 and {prefix}MODEL=<served model name>) or pass "
                "JudgeClient(base_url=..., model=...); to train without r_cons, leave 'consistency' out of the "
                "reward names"
            )
        return cls(**kwargs)

    # ------------------------------------------------------------------------------------------------------------

    def _attempt(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode("utf-8", "replace").strip() if err.fp is not None else ""
            retryable = err.code >= 500 or err.code in _RETRYABLE_STATUS
            raise _Failure(f"HTTP {err.code} from {self.url}: {detail}", retryable) from None
        except (
            OSError,
            http.client.HTTPException,
        ) as err:  # refused, reset, DNS, timeouts (URLError is OSError)
            reason = getattr(err, "reason", None) or err
            raise _Failure(f"{type(err).__name__} for {self.url}: {reason}", True) from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Failure(f"malformed chat-completions reply: {raw[:200]!r}", True) from None
        if not isinstance(content, str):
            raise _Failure(f"reply has no text content: {raw[:200]!r}", True)
        return content

    def request(self, prompt: str) -> JudgeReply:
        """One prompt as a single user message, with retries; never raises for network or server failures."""
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            **self.extra_body,
        }
        body = json.dumps(payload).encode("utf-8")
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            try:
                return JudgeReply(self._attempt(body), None, attempt + 1)
            except _Failure as failure:
                error = str(failure)
                logger.debug("judge attempt %d/%d failed: %s", attempt + 1, self.max_retries + 1, error)
                if not failure.retryable:
                    return JudgeReply(None, error, attempt + 1)
        return JudgeReply(None, error, self.max_retries + 1)

    def request_many(self, prompts: Sequence[str]) -> list[JudgeReply]:
        """:meth:`request` for each prompt, ``max_workers`` at a time, in input order."""
        if len(prompts) <= 1:
            return [self.request(p) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(prompts))) as pool:
            return list(pool.map(self.request, prompts))

    def complete(self, prompt: str) -> str | None:
        """The judge's reply text, or ``None`` (logged as a warning) if it could not be obtained."""
        reply = self.request(prompt)
        if reply.text is None:
            logger.warning("judge request failed after %d attempt(s): %s", reply.attempts, reply.error)
        return reply.text

    def complete_many(self, prompts: Sequence[str]) -> list[str | None]:
        """Concurrent :meth:`complete`; one warning with the failure count for the whole batch."""
        replies = self.request_many(prompts)
        failed = [r for r in replies if r.text is None]
        if failed:
            logger.warning(
                "judge: %d/%d requests failed (last error: %s)", len(failed), len(replies), failed[-1].error
            )
        return [r.text for r in replies]


class ConsistencyJudge:
    """r_cons as a TRL reward function: ``judge(completions=..., **columns) -> list[float | None]``.

    Per completion: the reasoning (:func:`~mapo.rewards.extraction.extract_think`) and the final answer
    (:func:`~mapo.rewards.extraction.extract_answer`) fill ``template``; the judge's YES → 1.0, NO → 0.0.

    * No closed reasoning block or no final answer → 0.0 without a request: such a completion is "incomplete or
      cut off", the prompt's second failure mode, and the verdict is certain.
    * Judge unreachable or reply neither YES nor NO → ``None`` (TRL ignores it), one warning per batch.
    * ``conditional_on_correct=True`` (the release's class default, off in its launcher and here) scores wrong
      answers 0.0 without asking; it then needs the ``answer``/``choices`` columns.

    Args:
        client: a :class:`JudgeClient`; ``None`` builds one from the ``MAPO_JUDGE_*`` environment variables at the
            first call (``ValueError`` if ``MAPO_JUDGE_BASE_URL`` is unset).
        template: prompt with ``{think_text}`` and ``{answer_text}``; default: the paper's appendix B.
        name: the ``__name__`` TRL logs (``rewards/<name>/mean``).
    """

    def __init__(
        self,
        client: JudgeClient | None = None,
        *,
        template: str = CONSISTENCY_PROMPT,
        conditional_on_correct: bool = False,
        env_prefix: str = ENV_PREFIX,
        name: str = "consistency_reward",
    ):
        missing = [p for p in ("{think_text}", "{answer_text}") if p not in template]
        if missing:
            raise ValueError(
                f"template must contain {missing} (the reasoning and the final answer are filled in)"
            )
        self._client = client
        self.template = template
        self.conditional_on_correct = conditional_on_correct
        self.env_prefix = env_prefix
        self.__name__ = name
        #: Why the last failed completion got ``None`` (read by the trainer's missing-reward warning).
        self.last_failure: str | None = None

    def __repr__(self) -> str:
        return f"ConsistencyJudge(client={self._client!r}, name={self.__name__!r})"

    @property
    def is_configured(self) -> bool:
        """A client was given, or ``{env_prefix}BASE_URL`` is set."""
        return self._client is not None or JudgeClient.env_configured(self.env_prefix)

    @property
    def client(self) -> JudgeClient:
        if self._client is None:
            self._client = JudgeClient.from_env(self.env_prefix)
        return self._client

    def prompt_for(self, completion: Any) -> str | None:
        """The judge prompt of one completion, or ``None`` when it lacks reasoning or a final answer."""
        text = completion_text(completion)
        think, answer = extract_think(text), extract_answer(text).answer
        if think is None or answer is None:
            return None
        return render_prompt(self.template, think, answer)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        client = self.client
        rewards: list[float | None] = [0.0] * len(completions)
        correct: list[float] | None = None
        if self.conditional_on_correct:
            if kwargs.get("answer") is None:
                raise ValueError("conditional_on_correct=True needs the 'answer' column (and 'choices')")
            correct = accuracy_reward(completions, kwargs["answer"], kwargs.get("choices"))
        queries: list[tuple[int, str]] = []
        for i, completion in enumerate(completions):
            if correct is not None and correct[i] < 1.0:
                continue
            prompt = self.prompt_for(completion)
            if prompt is not None:
                queries.append((i, prompt))
        replies = client.request_many([p for _, p in queries])
        unreachable, unparsed = [], []
        for (i, _), reply in zip(queries, replies):
            if reply.text is None:
                rewards[i] = None
                unreachable.append(reply)
                continue
            rewards[i] = parse_yes_no(reply.text)
            if rewards[i] is None:
                unparsed.append(reply.text)
        if unreachable or unparsed:
            self.last_failure = (
                f"judge at {client.url} unreachable: {unreachable[-1].error}"
                if unreachable
                else f"judge reply neither YES nor NO: {unparsed[0][:80]!r}"
            )
            logger.warning(
                "%s: judge at %s failed for %d of %d queried completions (%d of %d in the batch): %d unreachable "
                "(last error: %s), %d replies neither YES nor NO (e.g. %r). Their reward is None, which TRL "
                "leaves out of the weighted sum.",
                self.__name__,
                client.url,
                len(unreachable) + len(unparsed),
                len(queries),
                len(unreachable) + len(unparsed),
                len(completions),
                len(unreachable),
                unreachable[-1].error if unreachable else "-",
                len(unparsed),
                unparsed[0][:80] if unparsed else "",
            )
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric) and queries:
            log_metric("consistency_judge/failed_fraction", (len(unreachable) + len(unparsed)) / len(queries))
        return rewards


#: r_cons configured from the ``MAPO_JUDGE_*`` environment variables (resolved at the first call).
consistency_reward = ConsistencyJudge()
