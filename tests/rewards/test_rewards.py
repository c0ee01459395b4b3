"""Rewards of eq. 6: accuracy/format tables, and the consistency judge against a real local HTTP server."""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mapo.rewards import (
    CONSISTENCY_PROMPT,
    ConsistencyJudge,
    JudgeClient,
    accuracy_reward,
    build_rewards,
    consistency_reward,
    extract_answer,
    extract_think,
    format_reward,
    parse_yes_no,
    resolve_gold,
    reward_name,
)
from mapo.rewards.judge import render_prompt

INSTR = ["Violin", "Piano", "Flute", "Drums"]  # correct: Piano (B)
MECH = ["Factory machinery", "Wind turbine", "Car engine", "Airplane"]
DOGS = ["dog", "dog barking", "cat", "bird"]
NUMS = ["2", "3", "4", "5"]
ROOSTER = ["A rooster crows", "A dog barks", "A duck quacks", "A horse neighs"]
DUPES = ["Piano", "piano.", "Drums"]
T = "<think>The timbre is percussive with hammered strings and a sustain pedal.</think>"

# (completion, answer, choices, expected r_acc)
ACCURACY_TABLE = [
    # letters
    (T + "<answer>B</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>(B)</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>B.</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>b</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>[B]</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>B)</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>Option B</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>**B**</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>Answer: B</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>A</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>E</answer>", "Piano", INSTR, 0.0),  # letter out of range
    # option text
    (T + "<answer>Piano</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>  PIANO \n</answer>", "Piano", INSTR, 1.0),
    (T + '<answer>"Piano."</answer>', "Piano", INSTR, 1.0),
    (T + "<answer>The answer is Piano.</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>Ｐｉａｎｏ</answer>", "Piano", INSTR, 1.0),  # full-width, NFKC
    (T + "<ANSWER>Piano</ANSWER>", "Piano", INSTR, 1.0),
    (T + "<answer>Violin</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>Pian</answer>", "Piano", INSTR, 0.0),  # no prefix matching
    (T + "<answer>Pianos</answer>", "Piano", INSTR, 0.0),
    # letter plus text
    (T + "<answer>B. Piano</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>(B) piano</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>Option B: Piano</answer>", "Piano", INSTR, 1.0),
    (T + "<answer>C. Piano</answer>", "Piano", INSTR, 0.0),  # letter and text disagree
    # extra words, hedges, several answers, empty
    (T + "<answer>It is a piano</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>A or B</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>Piano or Violin</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>B</answer><answer>B</answer>", "Piano", INSTR, 0.0),
    (T + "<answer>A</answer>\n<answer>B</answer>", "Piano", INSTR, 0.0),
    (T + "<answer></answer>", "Piano", INSTR, 0.0),
    (T + "<answer>   </answer>", "Piano", INSTR, 0.0),
    (T, "Piano", INSTR, 0.0),  # nothing after </think>
    # missing tags
    (T + "\n\nPiano", "Piano", INSTR, 1.0),
    (T + "The final answer is (B).", "Piano", INSTR, 1.0),
    ("The timbre is percussive.</think>\nB", "Piano", INSTR, 1.0),  # <think> opened by the chat template
    ("Piano", "Piano", INSTR, 1.0),  # no think tags at all
    ("**Answer:** B", "Piano", INSTR, 1.0),
    ("<think>Hammered strings, so <answer>B</answer>", "Piano", INSTR, 0.0),  # reasoning never closed
    ("<think>I pick <answer>B</answer></think>", "Piano", INSTR, 0.0),  # answer only inside the reasoning
    ("<think>Maybe <answer>A</answer>?</think><answer>B</answer>", "Piano", INSTR, 1.0),
    ("", "Piano", INSTR, 0.0),
    # other option sets
    (T + "Factory machinery", "Factory machinery", MECH, 1.0),
    (T + "<answer>factory  machinery.</answer>", "Factory machinery", MECH, 1.0),
    (T + "<answer>Factory</answer>", "Factory machinery", MECH, 0.0),
    (T + "<answer>dog</answer>", "dog", DOGS, 1.0),
    (T + "<answer>dog barking</answer>", "dog", DOGS, 0.0),  # the reference's prefix rule would say 1
    (T + "<answer>dogs</answer>", "dog", DOGS, 0.0),
    (T + "<answer>3</answer>", "3", NUMS, 1.0),
    (T + "<answer>3.</answer>", "3", NUMS, 1.0),
    (T + "<answer>B</answer>", "3", NUMS, 1.0),
    (T + "<answer>C</answer>", "3", NUMS, 0.0),  # C is "4"
    (T + "<answer>3 beeps</answer>", "3", NUMS, 0.0),
    (T + "<answer>A rooster crows</answer>", "A rooster crows", ROOSTER, 1.0),  # text first, not "letter A"
    (T + "<answer>A</answer>", "A rooster crows", ROOSTER, 1.0),
    (T + "<answer>a dog barks</answer>", "A rooster crows", ROOSTER, 0.0),
    # the gold answer given as a letter
    (T + "<answer>Piano</answer>", "B", INSTR, 1.0),
    (T + "<answer>(B)</answer>", "(B)", INSTR, 1.0),
    # answer text equal to two options (after normalisation) is ambiguous
    (T + "<answer>Piano</answer>", "A", DUPES, 0.0),
    (T + "<answer>A</answer>", "A", DUPES, 1.0),
    (T + "<answer>Drums</answer>", "Drums", DUPES, 1.0),
    # no choices: free-text comparison with `answer`
    (T + "<answer>Piano</answer>", "piano", None, 1.0),
    (T + "<answer>grand piano</answer>", "piano", None, 0.0),
    (T + "<answer>(c)</answer>", "C", [], 1.0),
]


def _conversational(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("form", ["string", "conversational"])
def test_accuracy_table(form):
    assert len(ACCURACY_TABLE) >= 30
    completions = [c if form == "string" else _conversational(c) for c, *_ in ACCURACY_TABLE]
    got = accuracy_reward(
        prompts=[None] * len(completions),
        completions=completions,
        answer=[a for _, a, _, _ in ACCURACY_TABLE],
        choices=[ch for _, _, ch, _ in ACCURACY_TABLE],
        trainer_state=None,
    )
    mismatches = [(row[0], row[1], g) for row, g in zip(ACCURACY_TABLE, got) if g != row[3]]
    assert not mismatches


def test_accuracy_conversational_parts_and_broadcasting():
    parts = [{"role": "assistant", "content": [{"type": "text", "text": T}, {"type": "text", "text": "B"}]}]
    # One answer and one flat option list shared by all completions.
    got = accuracy_reward(
        completions=[parts, T + "<answer>D</answer>", T + "Piano"], answer="Piano", choices=INSTR
    )
    assert got == [1.0, 0.0, 1.0]


def test_accuracy_contains_mode_is_opt_in_and_keeps_the_name():
    contains = functools.partial(accuracy_reward, answer_match="contains")
    assert reward_name(contains) == "accuracy_reward"
    completions = [
        T + "<answer>It is a piano</answer>",
        T + "<answer>piano or violin</answer>",
        T + "<answer>definitely the dog barking</answer>",  # "dog" and "dog barking" both occur
    ]
    got = contains(
        completions=completions, answer=["Piano", "Piano", "dog barking"], choices=[INSTR, INSTR, DOGS]
    )
    assert got == [1.0, 0.0, 0.0]
    assert accuracy_reward(completions=completions[:1], answer=["Piano"], choices=[INSTR]) == [0.0]


def test_accuracy_bad_inputs_raise_with_a_fix():
    with pytest.raises(ValueError, match="answer='Guitar'.*fix the dataset row"):
        accuracy_reward(completions=[T + "B"], answer=["Guitar"], choices=[INSTR])
    with pytest.raises(ValueError, match="several identical options|several options|exactly one"):
        resolve_gold("Piano", DUPES)
    with pytest.raises(ValueError, match="letter E out of range"):
        resolve_gold("E", INSTR)
    with pytest.raises(ValueError, match="answer: got 1 entries for 2 completions"):
        accuracy_reward(completions=["a", "b"], answer=["a"], choices=None)
    with pytest.raises(TypeError, match="completions"):
        accuracy_reward(completions=[42], answer=["a"])
    assert resolve_gold("b. piano", INSTR) == 1


def test_extraction_sources():
    assert extract_answer(T + "<answer> B </answer>").answer == "B"
    assert extract_answer(T + "<answer> B </answer>").source == "tag"
    assert extract_answer(T + " Piano ").source == "tail"
    assert extract_answer("Piano").source == "whole"
    assert extract_answer("<think>cut off").reason.startswith("reasoning was never closed")
    assert extract_answer(T + "<answer>A</answer><answer>B</answer>").reason == "2 <answer> tags"
    assert extract_think(T + "B") == "The timbre is percussive with hammered strings and a sustain pedal."
    assert extract_think("opened by the template</think>B") == "opened by the template"
    assert extract_think("<think>  </think>B") is None
    assert extract_think("no reasoning") is None


# (completion, expected default, expected think_in_prompt=True, expected require_answer_tag=False)
FORMAT_TABLE = [
    ("<think>reason</think><answer>B</answer>", 1.0, 0.0, 1.0),
    ("\n<think>\nreason\n</think>\n\n<answer>B</answer>\n", 1.0, 0.0, 1.0),
    ("<THINK>reason</THINK><ANSWER>B</ANSWER>", 1.0, 0.0, 1.0),
    ("reason</think><answer>B</answer>", 0.0, 1.0, 0.0),  # <think> opened by the chat template
    ("<think></think><answer>B</answer>", 0.0, 0.0, 0.0),  # empty reasoning
    ("<think> \n </think><answer>B</answer>", 0.0, 0.0, 0.0),
    ("<think>reason</think><answer> </answer>", 0.0, 0.0, 0.0),  # empty answer
    ("<think>reason</think>Piano", 0.0, 0.0, 1.0),  # untagged answer
    ("<think>reason</think>", 0.0, 0.0, 0.0),  # no answer
    ("<think>a</think><think>b</think><answer>B</answer>", 0.0, 0.0, 0.0),  # two think blocks
    ("<think>reason</think><answer>A</answer><answer>B</answer>", 0.0, 0.0, 0.0),  # two answers
    ("<think>pick <answer>A</answer></think><answer>B</answer>", 0.0, 0.0, 0.0),  # answer tag in reasoning
    ("Sure! <think>reason</think><answer>B</answer>", 0.0, 0.0, 0.0),  # text before
    ("<think>reason</think><answer>B</answer> Hope this helps.", 0.0, 0.0, 0.0),  # text after
    ("<think>reason</think> So: <answer>B</answer>", 0.0, 0.0, 0.0),  # text between
    ("<think>reason cut off", 0.0, 0.0, 0.0),
    ("<answer>B</answer><think>reason</think>", 0.0, 0.0, 0.0),  # wrong order
    ("<think>reason</think><answer>B", 0.0, 0.0, 0.0),  # unclosed answer
    ("<think>reason</think>Piano<answer>B</answer>", 0.0, 0.0, 0.0),
    ("<answer>B</answer>", 0.0, 0.0, 0.0),
    ("", 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("form", ["string", "conversational"])
def test_format_table(form):
    completions = [c if form == "string" else _conversational(c) for c, *_ in FORMAT_TABLE]
    assert format_reward(completions=completions) == [r[1] for r in FORMAT_TABLE]
    assert format_reward(completions=completions, think_in_prompt=True) == [r[2] for r in FORMAT_TABLE]
    assert format_reward(completions=completions, require_answer_tag=False) == [r[3] for r in FORMAT_TABLE]


# ---------------------------------------------------------------------------------------------------------------
# Consistency judge against a real HTTP server
# ---------------------------------------------------------------------------------------------------------------


class _JudgeServer:
    """A chat-completions server on 127.0.0.1; ``behaviour(body, call_index) -> (status, reply, delay_s)``."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []
        self.behaviour = lambda body, i: (200, "YES", 0.0)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server API)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    index = len(server.requests)
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.paths.append(self.path)
                status, reply, delay = server.behaviour(body, index)
                if delay:
                    time.sleep(delay)
                if isinstance(reply, bytes):
                    payload = reply
                else:
                    payload = json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                    ).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _JudgeServer()
    yield s
    s.close()


def _client(url: str, **kw) -> JudgeClient:
    kw = {"timeout": 0.3, "max_retries": 1, "backoff": 0.01, **kw}
    return JudgeClient(url, model="judge-test", **kw)


def _completion(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def test_judge_yes_and_request_content(server):
    judge = ConsistencyJudge(_client(server.url, api_key="sk-test"))
    assert judge.__name__ == "consistency_reward"
    rewards = judge(
        prompts=["q"], completions=[_completion("Hammered strings, so piano.", "Piano")], answer=["Piano"]
    )
    assert rewards == [1.0]
    (body,) = server.requests
    assert server.paths == ["/v1/chat/completions"]
    assert body["model"] == "judge-test" and body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert [m["role"] for m in body["messages"]] == ["user"]
    content = body["messages"][0]["content"]
    assert "Thinking Process:\nHammered strings, so piano.\nFinal Answer:\nPiano\n" in content
    assert content.startswith("You are a reasoning consistency evaluator.")
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_judge_no_and_batch_order(server):
    server.behaviour = lambda body, i: (
        200,
        "YES" if "consistent" in body["messages"][0]["content"] else "NO",
        0.0,
    )
    completions = [
        _completion("consistent reasoning", "A") if k % 3 else _completion("contradicts itself", "B")
        for k in range(9)
    ]
    judge = ConsistencyJudge(_client(server.url, max_workers=4))
    assert judge(completions=completions) == [0.0 if k % 3 == 0 else 1.0 for k in range(9)]
    assert len(server.requests) == 9


def test_judge_skips_completions_without_reasoning_or_answer(server):
    judge = ConsistencyJudge(_client(server.url))
    completions = [
        "<think>cut off mid-sen",
        "No template at all",
        "<think>done</think>",
        _completion("ok", "B"),
    ]
    assert judge(completions=completions) == [0.0, 0.0, 0.0, 1.0]
    assert len(server.requests) == 1


def test_judge_malformed_replies_give_none_and_one_warning(server, caplog):
    replies = {0: (200, "MAYBE", 0.0), 1: (200, b"<html>oops</html>", 0.0)}
    server.behaviour = lambda body, i: replies.get(i, (200, b"not json", 0.0))
    judge = ConsistencyJudge(_client(server.url, max_retries=0, max_workers=1))
    metrics = {}
    with caplog.at_level(logging.WARNING, logger="mapo.rewards.judge"):
        rewards = judge(
            completions=[_completion("a", "A"), _completion("b", "B")],
            log_metric=lambda name, value: metrics.__setitem__(name, value),
        )
    assert rewards == [None, None]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "failed for 2 of 2" in msg and "1 unreachable" in msg and "1 replies neither YES nor NO" in msg
    assert metrics == {"consistency_judge/failed_fraction": 1.0}


def test_judge_timeout_gives_none(server):
    server.behaviour = lambda body, i: (200, "YES", 0.6)
    judge = ConsistencyJudge(_client(server.url, timeout=0.2, max_retries=0))
    assert judge(completions=[_completion("slow", "A")]) == [None]


def test_judge_retries_after_http_500(server):
    server.behaviour = lambda body, i: (500, b'{"error": "overloaded"}', 0.0) if i == 0 else (200, "NO", 0.0)
    judge = ConsistencyJudge(_client(server.url, max_retries=2))
    assert judge(completions=[_completion("a", "A")]) == [0.0]
    assert len(server.requests) == 2


def test_judge_does_not_retry_client_errors(server):
    server.behaviour = lambda body, i: (404, b'{"error": "model not found"}', 0.0)
    reply = _client(server.url, max_retries=3).request("hi")
    assert (
        reply.text is None
        and reply.attempts == 1
        and "HTTP 404" in reply.error
        and "model not found" in reply.error
    )
    assert len(server.requests) == 1


def test_judge_server_down_gives_none_and_logs_counts(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connection refused
    judge = ConsistencyJudge(_client(f"http://127.0.0.1:{port}/v1"))
    with caplog.at_level(logging.WARNING, logger="mapo.rewards.judge"):
        rewards = judge(completions=[_completion("a", "A"), _completion("b", "B"), "no answer"])
    assert rewards == [None, None, 0.0]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "failed for 2 of 2 queried completions (2 of 3 in the batch): 2 unreachable" in record.getMessage()
    # the reason the trainer's missing-reward warning quotes
    assert judge.last_failure.startswith(
        f"judge at http://127.0.0.1:{port}/v1/chat/completions unreachable: "
    )


def test_judge_client_complete_is_reusable_with_any_prompt(server):
    server.behaviour = lambda body, i: (200, "score: 7", 0.0)
    client = _client(server.url)
    assert client.complete("Rate this answer from 0 to 10.") == "score: 7"
    assert client.complete_many(["a", "b", "c"]) == ["score: 7"] * 3
    assert server.requests[0]["messages"][0]["content"] == "Rate this answer from 0 to 10."


def test_conditional_on_correct_skips_wrong_answers(server):
    judge = ConsistencyJudge(_client(server.url), conditional_on_correct=True)
    completions = [_completion("piano", "Piano"), _completion("violin", "Violin")]
    assert judge(completions=completions, answer=["Piano", "Piano"], choices=[INSTR, INSTR]) == [1.0, 0.0]
    assert len(server.requests) == 1


def test_judge_from_env(server, monkeypatch):
    monkeypatch.setenv("MAPO_JUDGE_BASE_URL", server.url)
    monkeypatch.setenv("MAPO_JUDGE_MODEL", "env-model")
    monkeypatch.setenv("MAPO_JUDGE_TIMEOUT", "0.3")
    judge = ConsistencyJudge()
    assert judge.is_configured
    assert judge(completions=[_completion("a", "A")]) == [1.0]
    assert server.requests[0]["model"] == "env-model"
    assert judge.client.timeout == 0.3


def test_unconfigured_judge_is_an_explicit_error(monkeypatch):
    monkeypatch.delenv("MAPO_JUDGE_BASE_URL", raising=False)
    judge = ConsistencyJudge()
    assert not judge.is_configured
    with pytest.raises(ValueError, match="MAPO_JUDGE_BASE_URL"):
        judge(completions=[_completion("a", "A")])
    with pytest.raises(ValueError, match="base_url must start with http"):
        JudgeClient("localhost:8000")
    assert consistency_reward.__name__ == "consistency_reward"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("YES", 1.0),
        ("NO", 0.0),
        ("yes", 1.0),
        ("**No.**", 0.0),
        (" Yes, the conclusion matches.", 1.0),
        ('"NO"', 0.0),
        ("<think>Checking the steps...</think>\nYES", 1.0),
        ("Checking.</think>NO", 0.0),
        ("The reasoning is consistent.\nYES", 1.0),
        ("NOT SURE", None),
        ("Maybe", None),
        ("Nope", None),
        ("", None),
    ],
)
def test_parse_yes_no(reply, expected):
    assert parse_yes_no(reply) == expected


def test_prompt_is_the_papers_appendix_b():
    assert CONSISTENCY_PROMPT.startswith(
        "You are a reasoning consistency evaluator. Given a model’s thinking process and its final answer, your task "
        "is to evaluate it against two specific failure modes. Thinking Process:\n{think_text}\nFinal Answer:\n"
        "{answer_text}\nRespond “NO” ONLY if at least one of the following is true: 1. The conclusion reached"
    )
    assert CONSISTENCY_PROMPT.endswith("respond “YES”. Only output YES or NO.")
    rendered = render_prompt(CONSISTENCY_PROMPT, "uses {braces} and {answer_text}", "B")
    assert "Thinking Process:\nuses {braces} and {answer_text}\nFinal Answer:\nB\n" in rendered
    with pytest.raises(ValueError, match="answer_text"):
        ConsistencyJudge(_client("http://127.0.0.1:1/v1"), template="Only {think_text}")


# ---------------------------------------------------------------------------------------------------------------
# Combining rewards
# ---------------------------------------------------------------------------------------------------------------


def test_build_rewards_with_judge_uses_the_papers_weights(server):
    from trl.trainer.utils import get_callable_name

    funcs, weights, acc_name = build_rewards(judge=_client(server.url))
    assert [get_callable_name(f) for f in funcs] == ["accuracy_reward", "format_reward", "consistency_reward"]
    assert weights == [2.0, 1.0, 1.0]
    assert acc_name == "accuracy_reward"
    completion = _completion("piano", "Piano")
    per_func = [f(prompts=["q"], completions=[completion], answer=["Piano"], choices=[INSTR]) for f in funcs]
    assert sum(w * r[0] for w, r in zip(weights, per_func)) == 4.0


def test_build_rewards_without_judge_is_explicit(monkeypatch, caplog):
    monkeypatch.delenv("MAPO_JUDGE_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="no judge is configured"):
        build_rewards()
    with caplog.at_level(logging.WARNING, logger="mapo.rewards.combine"):
        rs = build_rewards(missing_judge="drop")
    assert [reward_name(f) for f in rs.funcs] == ["accuracy_reward", "format_reward"]
    assert rs.weights == [2.0, 1.0]
    assert "WITHOUT r_cons" in caplog.text
    rs = build_rewards(("format", "accuracy"), weights={"accuracy": 3.0})
    assert (rs.weights, rs.accuracy_name) == ([1.0, 3.0], "accuracy_reward")
    rs = build_rewards(("format",), weights=[0.5])
    assert (rs.weights, rs.accuracy_name) == ([0.5], None)
    contains = functools.partial(accuracy_reward, answer_match="contains")
    assert build_rewards((contains, "format")).accuracy_name == "accuracy_reward"
    with pytest.raises(ValueError, match="unknown reward 'acc'"):
        build_rewards(("acc",))
    with pytest.raises(ValueError, match="weights has 1 entries for 2 rewards"):
        build_rewards(("accuracy", "format"), weights=[1.0])
    with pytest.raises(ValueError, match="name none of the rewards"):
        build_rewards(("accuracy",), weights={"fromat": 1.0})


def test_build_rewards_reads_the_environment(server, monkeypatch):
    monkeypatch.setenv("MAPO_JUDGE_BASE_URL", server.url)
    funcs, weights, _ = build_rewards()
    assert isinstance(funcs[2], ConsistencyJudge) and funcs[2].client.url == server.url + "/chat/completions"
