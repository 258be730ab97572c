"""``python -m bench``: every benchmark in one run, then ``results.json``, ``REPORT.md`` and
the plots.

Sections (each can fail on its own: its error is recorded and the others still run):
``imports`` (import time and memory), ``sdk`` (per-call cost), ``scale`` (10 to 10,000
prompts), ``bitbucket`` (the emulator) and ``proxy``. LiteLLM is measured when its
virtualenv is given (``--litellm-venv``, made on first use) or its interpreter
(``--litellm-python``); without it, its columns say why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import imports, plots, report, sdk
from bench.litellm_env import LiteLLMSetup, ensure_litellm, verify
from bench.prompts import HELLO, PROMPTS, write_prompts
from bench.settings import PRESETS, Settings
from bench.workers import Interpreter, Worker

__all__ = ["SECTIONS", "main", "run"]

SECTIONS = ("imports", "sdk", "scale", "bitbucket", "proxy")
"""Every section, in the order they run."""

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (the default output folder is its ``bench/``)."""


def _clean(value: Any) -> Any:
    """``value`` with NaN and infinities turned into ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return done.stdout.strip() or None


def _request_fields(prompt_dir: Path) -> dict[str, dict[str, Any]]:
    """What promptdock sends besides the messages, per prompt: the HTTP floor sends the same."""
    import promptdock

    dock = promptdock.PromptDock(prompt_directory=str(prompt_dir))
    fields = {}
    for prompt in PROMPTS:
        rendered = dock.render(prompt.prompt_id, prompt.variables)
        fields[prompt.prompt_id] = {"model": rendered.model or "gpt-4", **rendered.params}
    return fields


def _sdk(settings: Settings, litellm: Interpreter | None, work: Path) -> dict[str, Any]:
    from bench import bench_proxy
    from tests.support.openai_server import OpenAIServer

    prompt_dir = write_prompts(work / "prompts")
    interpreters = [Interpreter.promptdock(), *([litellm] if litellm else [])]
    workers: dict[str, Worker] = {}
    upstream, port = bench_proxy.start_upstream(work)
    try:
        for interpreter in interpreters:
            log = work / f"{interpreter.module}-worker.log"
            workers[interpreter.module] = Worker(interpreter, work, log)
        versions = {
            name: worker.request(settings.timeout, op="setup", prompt_dir=str(prompt_dir))
            for name, worker in workers.items()
        }
        with OpenAIServer() as recorder:
            same = sdk.check_same_messages(
                workers,
                recorder.base_url,
                lambda: [r.body for r in recorder.requests],
                settings.timeout,
            )
        upstream_at = sdk.Upstream(f"http://127.0.0.1:{port}/v1", _request_fields(prompt_dir))
        results = sdk.measure_sdk(settings, workers, upstream_at)
    finally:
        for worker in workers.values():
            worker.close()
        bench_proxy.stop(upstream)
    results["workers"] = versions
    results["same_request"] = same
    return results


def _imports(settings: Settings, litellm: Interpreter | None, work: Path) -> dict[str, Any]:
    prompt_dir = write_prompts(work / "prompts-imports", (HELLO,))
    interpreters = [Interpreter.promptdock(), *([litellm] if litellm else [])]
    return imports.measure_imports(settings, interpreters, prompt_dir, work)


def _scale(settings: Settings, litellm: Interpreter | None, work: Path) -> dict[str, Any]:
    from bench.scale import measure_scale

    return measure_scale(settings, work)


def _bitbucket(settings: Settings, litellm: Interpreter | None, work: Path) -> dict[str, Any]:
    from bench.gitsource import measure_bitbucket

    return measure_bitbucket(settings)


def _proxy(settings: Settings, litellm: Interpreter | None, work: Path) -> dict[str, Any]:
    from bench.proxies import measure_proxy

    return measure_proxy(settings, work, litellm)


_RUNNERS: dict[str, Callable[[Settings, Interpreter | None, Path], dict[str, Any]]] = {
    "imports": _imports,
    "sdk": _sdk,
    "scale": _scale,
    "bitbucket": _bitbucket,
    "proxy": _proxy,
}


def _precompile(setup: LiteLLMSetup, timeout: float) -> str:
    """Cached bytecode for both environments, so imports are timed as installed programs run
    (this machine sets PYTHONDONTWRITEBYTECODE, and ``uv`` does not compile on install)."""
    interpreters = [Interpreter.promptdock(), *([setup.interpreter] if setup.interpreter else [])]
    errors = [e for i in interpreters if (e := i.precompile(timeout)) is not None]
    return "; ".join(errors) or "precompiled (compileall) in every environment"


def run(
    settings: Settings,
    setup: LiteLLMSetup,
    work: Path,
    sections: tuple[str, ...] = SECTIONS,
    preset: str = "custom",
    precompile: bool = True,
) -> dict[str, Any]:
    """Run ``sections`` and return every figure (JSON-ready: no NaN).

    :param precompile: write cached bytecode in both environments first (see
        :func:`_precompile`); the smoke test skips it.
    """
    started = time.perf_counter()
    if precompile:
        print("[bench] precompiling bytecode ...", flush=True)
    bytecode = _precompile(setup, settings.timeout) if precompile else "as found"
    results: dict[str, Any] = {
        "environment": {
            "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "preset": preset,
            "settings": vars(settings),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_start": os.getloadavg(),
            "git_commit": _git_commit(),
            "bytecode": bytecode,
        },
        "litellm": {
            "available": setup.interpreter is not None,
            "error": setup.error,
            "note": setup.note,
            "version": setup.version,
        },
    }
    for section in sections:
        section_started = time.perf_counter()
        print(f"[bench] {section} ...", flush=True)
        try:
            results[section] = _RUNNERS[section](settings, setup.interpreter, work)
        except Exception as exc:  # recorded in the report; the other sections still run
            traceback.print_exc()
            results[section] = {"error": f"{type(exc).__name__}: {exc}"}
        results[section]["seconds"] = time.perf_counter() - section_started
        print(f"[bench] {section} done in {results[section]['seconds']:.0f} s", flush=True)
    environment = results["environment"]
    environment["load_average_end"] = os.getloadavg()
    environment["seconds"] = time.perf_counter() - started
    versions = results.get("sdk", {}).get("workers", {})
    environment["versions"] = {name: info.get("versions", {}) for name, info in versions.items()}
    cleaned: dict[str, Any] = _clean(results)
    return cleaned


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """``results.json``, the plots and ``REPORT.md`` in ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    results["targets"] = _clean(report.targets(results))
    written = [out / "results.json"]
    written[0].write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    pictures, note = plots.write_plots(results, out)
    written += pictures
    report_path = out / "REPORT.md"
    report_path.write_text(report.render(results, [p.name for p in pictures], note), "utf-8")
    written.append(report_path)
    return written


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--litellm-venv", type=Path, help="LiteLLM's virtualenv (made if missing)")
    where.add_argument("--litellm-python", help="an interpreter that has litellm[proxy]")
    parser.add_argument("--no-upgrade", action="store_true", help="keep the installed LiteLLM")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where outputs go")
    parser.add_argument(
        "--report-only", action="store_true", help="redraw REPORT.md and plots from results.json"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (1 when a section failed)."""
    args = _arguments(argv)
    if args.report_only:
        results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    else:
        sections = tuple(args.only.split(",")) if args.only else SECTIONS
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise SystemExit(f"unknown section(s) {', '.join(unknown)}; known: {SECTIONS}")
        if args.litellm_venv:
            print(f"[bench] LiteLLM virtualenv {args.litellm_venv} ...", flush=True)
            # Absolute: the benchmark's processes run in other working directories.
            setup = ensure_litellm(args.litellm_venv.resolve(), upgrade=not args.no_upgrade)
        elif args.litellm_python:
            python = args.litellm_python
            if os.sep in python:  # a path, not a command looked up on PATH
                python = str(Path(python).resolve())
            setup = LiteLLMSetup(Interpreter.litellm(python))
        else:
            setup = LiteLLMSetup(None, error="not requested (run with --litellm-venv PATH)")
        setup = verify(setup)
        if setup.error:
            print(f"[bench] LiteLLM is not measured: {setup.error}", flush=True)
        with tempfile.TemporaryDirectory(prefix="promptdock-bench-") as name:
            results = run(PRESETS[args.preset], setup, Path(name), sections, args.preset)
    for path in write_outputs(results, args.out):
        print(f"[bench] wrote {path}")
    failed = [s for s in SECTIONS if isinstance(results.get(s), dict) and "error" in results[s]]
    return 1 if failed else 0
