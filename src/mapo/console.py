"""How the ``mapo`` command talks: logging set up once, user errors as one ``error:`` line and exit code 2.

A user error is a problem the user fixes in their data, config or command line (a bad value, a missing file, a
missing optional package or data set); the message says what is wrong and how to fix it, so a traceback only hides
it. ``--debug`` (anywhere on the command line) re-raises with the full traceback. Anything else (a bug) keeps its
traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

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
