"""Code that only tests and benchmarks use (not part of the installed ``exact_ct`` package).

- ``tests.support.dicom_series``: small synthetic CT DICOM series (ingest tests and benchmarks).
- ``tests.support.toy``: tiny toy interim trees (dataset / training / evaluation tests).
- ``tests.support.label_scoring``: the labeller scored against CT-RATE manual labels.

How it is imported, one way for all: the repository root goes first on ``sys.path`` -- in tests by
``pythonpath = ["."]`` under ``[tool.pytest.ini_options]`` in pyproject.toml, in benchmarks by
``import _repo`` (benchmarks/_repo.py) -- and code says ``from tests.support.toy import make_toy_interim``.
"""
