"""Put the repository root first on ``sys.path`` (``import _repo  # noqa: F401`` before other imports).

Benchmarks run as ``python benchmarks/<name>.py``, so only benchmarks/ is on the path; this makes
``tests.support.*`` (test-only helpers: synthetic DICOM, toy interim trees, label scoring) and
``stages`` importable the same way the tests import them. run_all.py skips files starting with ``_``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))
