"""Log-probs of one fixed completion from vLLM and from the policy: the parity check of a weight sync.

A sync is right when the engine scores a fixed audio prompt + completion like the policy the trainer holds.
:func:`vllm_completion_logps` asks a running engine (prompt log-probs of ``prompt + completion``, one request with
the clip), :func:`policy_completion_logps` runs the transformers policy on the same ids and audio features. The
vLLM tests and ``benchmarks/gpu_check.py`` (``vllm_moe_sync``) compare the two.
"""

from __future__ import annotations

import torch

from .audio_requests import check_prompt_ids, collapse_placeholder_runs


def vllm_completion_logps(engine, prompt_ids: list[int], completion: list[int], clip, spec) -> torch.Tensor:
    """vLLM's log-probs of ``completion`` after ``prompt_ids`` with ``clip``, as a float32 CPU tensor.

    Args:
        engine: a ``vllm.LLM`` or anything holding one as ``.llm`` (:class:`AudioVLLMGeneration`).
        prompt_ids: the trainer's prompt ids, the audio placeholder run expanded by its processor; vLLM gets one
            placeholder per clip and expands it again, which must give exactly these ids (checked).
        completion: the token ids to score.
        clip: the prompt's waveform (at ``spec.sampling_rate``).
        spec: the family's :class:`~mapo.modality.ModalitySpec` (placeholder id, sampling rate).

    Raises:
        RuntimeError: vLLM expanded the placeholder to another count than the trainer's processor.
    """
    from vllm import SamplingParams

    llm = getattr(engine, "llm", engine)
    ids, _ = collapse_placeholder_runs(list(prompt_ids) + list(completion), spec.audio_token_id)
    request = {"prompt_token_ids": ids, "multi_modal_data": {"audio": (clip, spec.sampling_rate)}}
    out = llm.generate([request], SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
    check_prompt_ids([list(prompt_ids) + list(completion)], [list(out.prompt_token_ids)])
    rows = out.prompt_logprobs[len(prompt_ids) :]
    return torch.tensor([row[tok].logprob for row, tok in zip(rows, completion, strict=True)])


def policy_completion_logps(model, inputs, completion: list[int], suppressed=()) -> torch.Tensor:
    """The policy's (transformers) log-probs of ``completion`` after the prompt of ``inputs``, as a float32 CPU
    tensor.

    Args:
        model: the policy (a PEFT model scores with its adapters); its inputs go to its device.
        inputs: the processor's output for one prompt with its clip (batch of one, tensors).
        completion: the token ids to score.
        suppressed: token ids removed from the distribution first (what vLLM's processed log-probs of a sampled
            token are under the rollouts' ``logit_bias``).
    """
    device = next(model.parameters()).device
    prompt_ids = inputs["input_ids"][0].tolist()
    ids = torch.tensor([prompt_ids + list(completion)], device=device)
    features = {
        k: v.to(device) if torch.is_tensor(v) else v
        for k, v in inputs.items()
        if k not in ("input_ids", "attention_mask")
    }
    dtype = getattr(model, "dtype", torch.float32)
    for key, value in features.items():  # audio features in the model's dtype (bf16 policies)
        if torch.is_tensor(value) and value.is_floating_point():
            features[key] = value.to(dtype)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **features).logits.float()
    if suppressed:
        logits[..., list(suppressed)] = float("-inf")
    logps = torch.log_softmax(logits[0, len(prompt_ids) - 1 : -1], dim=-1)
    return logps.gather(-1, torch.tensor(completion, device=device)[:, None])[:, 0].cpu()


__all__ = ["policy_completion_logps", "vllm_completion_logps"]
