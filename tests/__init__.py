"""The test suite as a package, so that ``tests.support`` resolves to this folder.

A regular package is needed: medspacy-quickumls installs a top-level ``tests`` package in site-packages,
which would shadow a namespace package of the same name. Test modules themselves are still imported by
basename (their folders have no ``__init__.py``), as before.
"""
