"""The ``mapo`` command: ``demo`` (the CPU story), ``train``, ``check-data``, ``eval``, ``diagnose`` and ``example``."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

USAGE = """usage: mapo <command> [options]

commands:
  demo       CPU demo: modality collapse in a tiny audio LM, then GRPO vs MAPO (mapo demo --help)
  train      GRPO/MAPO training from a YAML config (mapo train --config configs/....yaml)
  eval       accuracy on MMAU / MMAR / MMSU / MMAU-Pro from local JSON files (mapo eval --help)
  diagnose   attention/Δh trajectories, evidence masking, POS entropy, probes, modality gap (mapo diagnose --help)
  check-data validate training JSONL files (audio, duration, gold answer) and print clip-length statistics
  example    print the worked example of the objective (eq. 1-5) on one small group
  vllm-serve vLLM rollout server for audio models (TRL's vllm-serve options; docs/vllm.md)

Any command: --debug shows the full traceback of an error (by default a user error prints one 'error:' line
and exits with code 2).
"""


# ---------------------------------------------------------------------------------------------------------------
# How the command talks: logging set up once; a user error (a problem the user fixes in their data, config or
# command line; the message says how) is one ``error:`` line and exit code 2, since a traceback only hides the
# message. ``--debug`` re-raises with the traceback. Anything else (a bug) keeps its traceback.
# ---------------------------------------------------------------------------------------------------------------

#: Exception types treated as user errors (``NltkDataMissingError`` is a ``LookupError``; data and config checks
#: raise ``ValueError`` subclasses).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    LookupError,
)

EXIT_USER_ERROR = 2

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(debug: bool = False) -> None:
    """INFO for ``mapo.*`` on the main process (WARNING on the others), WARNING for third-party libraries.

    Leaves logging alone when the application configured it already (a handler on the root logger).
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT, datefmt="%H:%M:%S")
    main_process = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("0", "")
    logging.getLogger("mapo").setLevel(
        logging.DEBUG if debug else logging.INFO if main_process else logging.WARNING
    )


def format_user_error(err: BaseException) -> str:
    """``error: <message>`` (the message's own lines kept, e.g. an install command), plus the ``--debug`` hint."""
    message = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError | LookupError) and message.startswith("'") and message.endswith("'"):
        message = message[1:-1]
    return f"error: {message}\n(run again with --debug for the traceback)"


def run_command(func: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Run ``func(argv)`` (``--debug`` removed from ``argv``) and turn user errors into exit code 2."""
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    configure_logging(debug)
    try:
        code = func(argv)
    except USER_ERRORS as err:
        if debug:
            raise
        print(format_user_error(err), file=sys.stderr)
        return EXIT_USER_ERROR
    return int(code or 0)


def _dispatch(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .trainer.cli import run

        run(rest)
    elif command == "check-data":
        from .trainer.check_data import main as check_data_main

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
        from .objective.worked_example import main as example_main

        example_main(rest)
    elif command == "vllm-serve":
        from .trainer.rollout.serve import main as serve_main

        return serve_main(rest)
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
    return run_command(_dispatch, argv)


if __name__ == "__main__":
    raise SystemExit(main())
