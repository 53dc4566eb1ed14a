"""Logging set-up shared by the command line and the stages: counts and ids only, never report text."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Client libraries that log every request at INFO (Prefect's API calls: hundreds per run); WARNING keeps
#: their errors on the console and drops the request lines, except with ``--verbose``.
_CHATTY = ("httpx", "httpcore", "urllib3", "asyncio", "filelock")
#: presidio (de-identification) logs each of its ~30 recognizers at INFO and each one it skips for another
#: language at WARNING, every time an analyzer is built: only its errors are worth a line.
_QUIET = ("presidio-analyzer", "presidio-anonymizer")


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("EXACT_LOG_LEVEL", "INFO"), logging.INFO)
    )
    logging.basicConfig(level=level, format=_FORMAT)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.ERROR)
    # medspacy's PyRuSH sentence splitter logs every sentence at DEBUG through loguru; silence it.
    try:
        from loguru import logger as _loguru

        _loguru.disable("PyRuSH")
    except ImportError:
        pass


def progress_bar(desc: str, *, enabled: bool = True, **kw: Any) -> Any:
    """A tqdm progress bar on stderr, shown only on a terminal (and when ``enabled``, e.g. on the main
    rank): logs, CI and DVC/Prefect captures get no bar lines. ``kw`` goes to tqdm (``total``,
    ``iterable``, ``unit``...)."""
    from tqdm.auto import tqdm

    kw.setdefault("leave", False)
    return tqdm(desc=desc, disable=not (enabled and sys.stderr.isatty()), **kw)


def progress(items: Iterable[T], desc: str, *, enabled: bool = True, **kw: Any) -> Iterable[T]:
    """``items`` behind a :func:`progress_bar`."""
    return progress_bar(desc, enabled=enabled, iterable=items, **kw)  # type: ignore[no-any-return]


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
