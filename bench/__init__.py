"""promptdock's benchmarks: ``python -m bench`` (``nox -s bench``) runs them all side by side
with LiteLLM and the floor and writes ``results.json``, ``REPORT.md`` and the plots here.

The older single-purpose scripts still run on their own: ``bench_core.py``,
``bench_bitbucket.py`` and ``bench_proxy.py``.
"""
