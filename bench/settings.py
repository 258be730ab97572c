"""How much load each benchmark applies: fixed counts, so every loop ends by itself."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRESETS", "Settings"]


@dataclass(frozen=True)
class Settings:
    """Counts and sizes for one run (see :data:`PRESETS`).

    :ivar rounds: rounds of the SDK measurement; every tool runs one short batch per prompt
        and round, so the machine's changing speed hits all of them alike.
    :ivar sdk_calls: timed calls per batch for the floor and promptdock.
    :ivar litellm_calls: timed calls per batch for LiteLLM (it is ~100x slower).
    :ivar http_calls: timed calls per round through the local upstream, every tool.
    :ivar import_runs: fresh processes per library for import time and memory.
    :ivar scale_sizes: prompt counts of the generated folders.
    :ivar scale_repeats: fresh processes per folder size.
    :ivar warm_calls: timed warm renders per process in the scale benchmark.
    :ivar bitbucket_prompts: prompts in the emulated Bitbucket repository.
    :ivar proxy_rounds: interleaved rounds of the proxy benchmark.
    :ivar proxy_levels: client concurrencies of the proxy benchmark.
    :ivar proxy_requests: requests per round and level against the upstream, the floor and
        promptdock.
    :ivar litellm_proxy_requests: requests per round and level against LiteLLM's proxy.
    :ivar startup_runs: cold starts per proxy, timed until ``/health/liveliness`` answers.
    :ivar timeout: seconds any one child process or request batch may take.
    """

    rounds: int
    sdk_calls: int
    litellm_calls: int
    http_calls: int
    import_runs: int
    scale_sizes: tuple[int, ...]
    scale_repeats: int
    warm_calls: int
    bitbucket_prompts: int
    proxy_rounds: int
    proxy_levels: tuple[int, ...]
    proxy_requests: int
    litellm_proxy_requests: int
    startup_runs: int
    timeout: float = 300.0


PRESETS = {
    "full": Settings(
        rounds=15,
        sdk_calls=600,
        litellm_calls=80,
        http_calls=100,
        import_runs=5,
        scale_sizes=(10, 100, 1000, 10_000),
        scale_repeats=3,
        warm_calls=2000,
        bitbucket_prompts=1000,
        proxy_rounds=3,
        proxy_levels=(1, 8, 16, 32, 64),
        proxy_requests=1500,
        litellm_proxy_requests=100,
        startup_runs=3,
    ),
    "quick": Settings(
        rounds=6,
        sdk_calls=300,
        litellm_calls=20,
        http_calls=30,
        import_runs=3,
        scale_sizes=(10, 100, 1000),
        scale_repeats=2,
        warm_calls=500,
        bitbucket_prompts=200,
        proxy_rounds=2,
        proxy_levels=(1, 8, 16, 32, 64),
        proxy_requests=400,
        litellm_proxy_requests=40,
        startup_runs=2,
    ),
    "tiny": Settings(
        rounds=2,
        sdk_calls=20,
        litellm_calls=5,
        http_calls=5,
        import_runs=1,
        scale_sizes=(10, 100),
        scale_repeats=1,
        warm_calls=20,
        bitbucket_prompts=12,
        proxy_rounds=1,
        proxy_levels=(1, 8),
        proxy_requests=64,
        litellm_proxy_requests=16,
        startup_runs=1,
        timeout=60.0,
    ),
}
"""``full`` for ``nox -s bench``, ``quick`` for a look while working, ``tiny`` for the smoke
test."""
