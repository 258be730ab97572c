"""The Bitbucket source against the local emulator: cold start, warm calls, a push.

Built on ``bench_bitbucket.py`` (its cold start and warm-call measurements), plus the
refresh after a push that changes one file: what a webhook-triggered refresh costs in
requests, and what a refresh that finds no change costs. The emulator is a real HTTP server
on 127.0.0.1 over a real git repository, in this process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import promptdock
import promptdock_bitbucket
from bench import bench_bitbucket as base
from bench.settings import Settings
from tests.support.bitbucket import BitbucketEmulator, GitRepo

__all__ = ["METHOD", "measure_bitbucket"]

METHOD = (
    "The Bitbucket Cloud emulator (tests/support/bitbucket: HTTP on 127.0.0.1 over a git "
    "repository) with {prompts} prompts in nested folders. Cold start: a new source runs "
    "list_prompts() with an empty cache, then again after a restart with the snapshot on "
    "disk, online and offline. Warm calls: {warm} render() and completion(mock_response) "
    "calls x 7 repeats from Bitbucket and from a local folder (median per call). Push: one "
    "file changes on the branch, the source is invalidated as the push webhook does, and "
    "the next render() waits for the refresh; requests are counted by the emulator."
)
"""How the Bitbucket figures were measured, for the report."""


def _kinds(requests: list[Any]) -> dict[str, int]:
    return {
        "requests": len(requests),
        "ref": sum("/refs/" in r.path for r in requests),
        "diffstat": sum("/diffstat/" in r.path for r in requests),
        "listing pages": sum("/src/" in r.path and r.path.endswith("/") for r in requests),
        "files": sum("/src/" in r.path and not r.path.endswith("/") for r in requests),
    }


def _push(emu: BitbucketEmulator, repo: GitRepo, tmp: Path) -> dict[str, Any]:
    """Requests of a webhook-triggered refresh after a one-file push, and of one without."""
    promptdock_bitbucket.close_all()
    options = base.bitbucket_options(emu, tmp / "push-cache", cache_ttl=3600)
    dock = promptdock.PromptDock(sources={"bitbucket": options})
    listed = len(dock.list_prompts())
    dock.render("hello", base.VARIABLES)
    results: dict[str, Any] = {"prompts_loaded": listed}
    for label, change in (("no change", False), ("one file changed", True)):
        if change:
            edited = base.HELLO.replace("helpful assistant", "helpful assistant, edited")
            repo.commit({"prompts/hello.prompt": edited}, "edit one prompt")
        emu.reset_counts()
        started = time.perf_counter()
        dock.invalidate("bitbucket")  # what the push webhook does
        rendered = dock.render("hello", base.VARIABLES)
        seconds = time.perf_counter() - started
        source = promptdock_bitbucket.source_for(dock.get_source("bitbucket"))
        source.wait_idle(10)
        results[label] = {
            **_kinds(emu.requests),
            "seconds": seconds,
            "sees_the_edit": "edited" in rendered.messages[0]["content"],
        }
        # Every other prompt is still served from memory: no request for them.
        emu.reset_counts()
        dock.render("team0/area0/p0", base.VARIABLES)
        results[label]["requests for an unchanged prompt afterwards"] = emu.request_count()
    promptdock_bitbucket.close_all()
    return results


def measure_bitbucket(settings: Settings) -> dict[str, Any]:
    """Cold start, warm calls and push refresh figures for ``settings.bitbucket_prompts``."""
    count = settings.bitbucket_prompts
    results: dict[str, Any] = {
        "method": METHOD.format(prompts=count, warm=settings.warm_calls),
        "prompts": count,
    }
    with tempfile.TemporaryDirectory(prefix="promptdock-bench-bb-") as name:
        tmp = Path(name)
        folder = tmp / "fs"
        folder.mkdir()
        (folder / "hello.prompt").write_text(base.HELLO, encoding="utf-8")
        repo = GitRepo(tmp / "repo")
        files = {f"prompts/{_nested(i)}.prompt": base.HELLO for i in range(count - 1)}
        repo.commit({"prompts/hello.prompt": base.HELLO, **files}, "prompts")
        with BitbucketEmulator() as emu:
            emu.add_repository("acme", "prompts", repo)
            emu.add_token(base.TOKEN)
            try:
                results["cold_start"] = base.cold_start(emu, tmp, count)
                results["warm"] = base.warm_calls(emu, folder, tmp, settings.warm_calls)
                results["push"] = _push(emu, repo, tmp)
            finally:
                promptdock_bitbucket.close_all()
    return results


def _nested(index: int) -> str:
    """Ten prompts per folder, ten folders per team: ``team0/area0/p0``."""
    return f"team{index // 100}/area{index // 10 % 10}/p{index % 10}"
