"""Logging set-up shared by the command line and the stages: counts and ids only, never report text."""

from __future__ import annotations

import logging
import os

_FORMAT = "%(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("EXACT_LOG_LEVEL", "INFO"), logging.INFO)
    )
    logging.basicConfig(level=level, format=_FORMAT)
    # medspacy's PyRuSH sentence splitter logs every sentence at DEBUG through loguru; silence it.
    try:
        from loguru import logger as _loguru

        _loguru.disable("PyRuSH")
    except ImportError:
        pass


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
