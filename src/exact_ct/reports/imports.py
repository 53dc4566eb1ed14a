"""Import spaCy and medspacy without the heavy optional packages they load for features the labeller never uses.

``import spacy, medspacy`` costs ~6 CPU-seconds, most of it in two imports the rule pipeline does not need:

- **nltk** (~2.3 s, with scipy.stats and sklearn): ``medspacy.util`` imports ``quickumls`` to register
  its QuickUMLS component, and ``quickumls.core`` runs ``import nltk`` at the top but only uses it when a
  QuickUMLS matcher is built (stop words). Until then ``sys.modules["nltk"]`` holds a stand-in module
  whose first attribute access imports the real nltk, puts it in ``sys.modules`` and forwards to it, so
  anything that uses nltk gets the real package (``importlib.util.LazyLoader`` does not help here: the
  import statement itself reads the module's ``__spec__``, which makes it load).
- **torch** (~2.4 s): ``thinc.compat`` tries ``import torch`` to enable its PyTorch model wrappers
  (``has_torch``); blank spaCy pipelines never use them. While thinc is first imported, torch is made to
  look absent (``sys.modules["torch"] = None``, which Python turns into an ImportError, the case thinc
  handles for installations without torch); the entry is removed right after, so a later ``import torch``
  works normally. Only when neither torch nor thinc is imported yet: a process that already holds torch
  keeps thinc's torch support. Consequence, documented in docs/reports.md: in a process where spaCy was
  imported first through this function, thinc's PyTorch wrappers report torch as missing.

Nothing in spaCy, thinc, medspacy or quickumls is modified.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """Stand-in for a package that is imported but not used: the first attribute access imports the real one."""

    def __getattr__(self, attr: str) -> Any:
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)


def _defer(name: str) -> None:
    if name not in sys.modules and importlib.util.find_spec(name) is not None:
        sys.modules[name] = _Deferred(name)


def import_spacy_light() -> None:
    """Import spaCy and medspacy (idempotent), skipping nltk's and torch's import cost (module docstring)."""
    if "medspacy" in sys.modules and "spacy" in sys.modules:
        return
    _defer("nltk")
    hide_torch = "torch" not in sys.modules and "thinc" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import spacy  # noqa: F401
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    import medspacy  # noqa: F401
