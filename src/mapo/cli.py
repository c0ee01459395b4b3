"""The ``mapo`` command: ``demo`` (the CPU story), ``train``, ``eval``, ``diagnose`` and ``example``."""

from __future__ import annotations

import sys

USAGE = """usage: mapo <command> [options]

commands:
  demo       CPU demo: modality collapse in a tiny audio LM, then GRPO vs MAPO (mapo demo --help)
  train      GRPO/MAPO training from a YAML config (mapo train --config configs/....yaml)
  eval       accuracy on MMAU / MMAR / MMSU / MMAU-Pro from local JSON files (mapo eval --help)
  diagnose   attention/Δh trajectories, evidence masking, POS entropy, probes, modality gap (mapo diagnose --help)
  example    print the worked example of the objective (eq. 1-5) on one small group
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .trainer.cli import run

        run(rest)
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
        from .objective.worked_example import main as example_main

        example_main(rest)
    else:
        print(f"mapo: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
