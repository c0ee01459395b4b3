"""The ``mapo`` command: ``demo`` (the CPU story), ``train``, ``check-data``, ``eval``, ``diagnose`` and ``example``."""

from __future__ import annotations

import sys

USAGE = """usage: mapo <command> [options]

commands:
  demo       CPU demo: modality collapse in a tiny audio LM, then GRPO vs MAPO (mapo demo --help)
  train      GRPO/MAPO training from a YAML config (mapo train --config configs/....yaml)
  eval       accuracy on MMAU / MMAR / MMSU / MMAU-Pro from local JSON files (mapo eval --help)
  diagnose   attention/Δh trajectories, evidence masking, POS entropy, probes, modality gap (mapo diagnose --help)
  check-data validate training JSONL files (audio, duration, gold answer) and print clip-length statistics
  example    print the worked example of the objective (eq. 1-5) on one small group

Any command: --debug shows the full traceback of an error (by default a user error prints one 'error:' line
and exits with code 2).
"""


def _dispatch(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .train_cli import run

        run(rest)
    elif command == "check-data":
        from .data.check_cli import main as check_data_main

        return check_data_main(rest)
    elif command == "demo":
        from .synthetic.demo import main as demo_main

        return demo_main(rest)
    elif command == "eval":
        from .eval.cli import main as eval_main

        return eval_main(rest)
    elif command == "diagnose":
        from .diagnostics.cli import main as diagnose_main

        return diagnose_main(rest)
    elif command == "example":
        from .worked_example import main as example_main

        example_main(rest)
    else:
        print(f"mapo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mapo``. User errors print one ``error:`` line and return 2 (``--debug``: traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    from .console import run_command

    return run_command(_dispatch, argv)


if __name__ == "__main__":
    raise SystemExit(main())
