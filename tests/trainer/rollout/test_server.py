"""Server mode with a real ``mapo vllm-serve`` (CPU engine): GRPO and MAPO steps with the reload weight sync,
audio over the OpenAI chat route, and the consistency judge on the same server. One server for the module."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoProcessor
from trl import GRPOConfig

from mapo.rewards import JudgeClient
from mapo.testing import sine_clip, tiny_qwen2_audio_for_vllm
from mapo.trainer import AudioGRPOTrainer, MAPOConfig, MAPOTrainer
from mapo.trainer.rollout.engine import wav_base64

from .conftest import Server, length_reward, tone_rows, vllm_grpo_settings

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("q2a")
    model, processor = tiny_qwen2_audio_for_vllm()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    srv = Server(checkpoint, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    srv.stop()


def _chat(server: Server, content, max_tokens: int = 6) -> dict:
    body = {
        "model": checkpoint_name(server),
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
    }
    request = urllib.request.Request(
        f"{server.url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        return json.load(response)


def checkpoint_name(server: Server) -> str:
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=30) as response:
        return json.load(response)["data"][0]["id"]


@pytest.mark.parametrize("trainer_cls", [AudioGRPOTrainer, MAPOTrainer], ids=["grpo", "mapo"])
def test_train_step_through_the_server(server, checkpoint, tmp_path, trainer_cls):
    settings = vllm_grpo_settings(tmp_path, "server", vllm_server_base_url=server.url)
    if trainer_cls is MAPOTrainer:
        args = MAPOConfig(**settings, pos_tagger="lexicon", accuracy_reward_name="length_reward")
    else:
        args = GRPOConfig(**settings)
    processor = AutoProcessor.from_pretrained(checkpoint)
    trainer = trainer_cls(
        checkpoint, [length_reward], args, Dataset.from_list(tone_rows(1)), processing_class=processor
    )
    engine = trainer.vllm_generation
    assert (
        engine.weight_sync_mode == "reload"
    )  # no CUDA here: save + /collective_rpc reload, chosen automatically
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logs = trainer.state.log_history[0]
    assert engine.syncs == 1
    assert (tmp_path / "vllm-sync" / "model.safetensors").is_file()
    # the server scored its samples with the trainer's weights (only the suppressed tokens' mass differs)
    assert 0.0 < logs["vllm/sync_logp_drift"] < 0.02
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_server_accepts_audio_and_the_audio_matters(server):
    def ask(clip):
        return _chat(
            server,
            [
                {"type": "input_audio", "input_audio": {"data": wav_base64(clip, 16000), "format": "wav"}},
                {"type": "text", "text": "What do you hear?"},
            ],
        )

    low, noise = (
        ask(sine_clip(200.0, 1.0, seed=1)),
        ask(np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.3),
    )
    assert low["usage"]["prompt_tokens"] == noise["usage"]["prompt_tokens"]  # same text and clip length
    lp = [[t["logprob"] for t in r["choices"][0]["logprobs"]["content"]] for r in (low, noise)]
    tokens = [[t["token"] for t in r["choices"][0]["logprobs"]["content"]] for r in (low, noise)]
    assert tokens[0] != tokens[1] or lp[0] != lp[1]


def test_consistency_judge_can_use_the_rollout_server(server):
    client = JudgeClient(f"{server.url}/v1", model=checkpoint_name(server), max_tokens=4, max_retries=0)
    reply = client.request("Thinking Process: it is a dog.\nFinal Answer: a dog. Only output YES or NO.")
    assert reply.text is not None and reply.error is None  # the endpoint answered (a random model's words)
