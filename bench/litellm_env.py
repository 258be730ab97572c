"""LiteLLM in its own virtualenv: made once with ``uv`` and reused, refreshed on each run.

LiteLLM pulls in ~600 MB of dependencies (its pinned ``openai``, ``pydantic``, FastAPI...)
that must not leak into promptdock's environment, so it lives in a separate virtualenv whose
``python`` runs ``probe.py`` and whose ``litellm`` script runs the proxy. Installing can fail
(no index, a broken release): the caller gets the error text to print in the report, and the
rest of the benchmark runs without LiteLLM.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.workers import Interpreter

__all__ = ["REQUIREMENT", "LiteLLMSetup", "ensure_litellm", "verify"]

REQUIREMENT = "litellm[proxy]"
"""What is installed: the current release with its proxy extra."""


@dataclass(frozen=True)
class LiteLLMSetup:
    """The outcome of :func:`ensure_litellm`.

    :ivar interpreter: LiteLLM's interpreter, or ``None`` when it is not available.
    :ivar error: why it is not available (the installer's own words), else ``None``.
    :ivar note: something worth saying in the report even on success (e.g. the upgrade
        failed and the cached install was used).
    :ivar version: the installed LiteLLM release, once :func:`verify` imported it.
    """

    interpreter: Interpreter | None
    error: str | None = None
    note: str | None = None
    version: str | None = None


def _uv() -> list[str] | None:
    beside = Path(sys.executable).with_name("uv")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("uv")
    return [found] if found else None


def _run(command: list[str], timeout: float) -> str | None:
    """Run ``command``; ``None`` on success, else the last lines of its output."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command[:3])}: {exc}"
    if done.returncode == 0:
        return None
    tail = (done.stderr or done.stdout).strip().splitlines()[-6:]
    return f"{' '.join(command[:4])} exited {done.returncode}: " + " / ".join(tail)


def ensure_litellm(venv: Path, *, upgrade: bool = True, timeout: float = 900) -> LiteLLMSetup:
    """A virtualenv at ``venv`` with the current ``litellm[proxy]``.

    Made with ``uv venv`` + ``uv pip install`` when missing; when present, upgraded to the
    newest release if ``upgrade`` (a failed upgrade keeps the installed version, with a note).
    """
    uv = _uv()
    python = venv / "bin" / "python"
    installed = (venv / "bin" / "litellm").exists()
    if uv is None:
        if installed:
            return LiteLLMSetup(Interpreter.litellm(str(python)), note="uv not found: not upgraded")
        return LiteLLMSetup(None, error="uv is not installed: cannot make LiteLLM's virtualenv")
    if not python.exists():
        failed = _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], timeout)
        if failed:
            return LiteLLMSetup(None, error=failed)
    if installed and not upgrade:
        return LiteLLMSetup(Interpreter.litellm(str(python)))
    install = [*uv, "pip", "install", "--quiet", "--python", str(python)]
    failed = _run([*install, "--upgrade", REQUIREMENT], timeout)
    if failed and installed:
        return LiteLLMSetup(Interpreter.litellm(str(python)), note=f"upgrade failed: {failed}")
    if failed:
        return LiteLLMSetup(None, error=failed)
    return LiteLLMSetup(Interpreter.litellm(str(python)))


def verify(setup: LiteLLMSetup, timeout: float = 300) -> LiteLLMSetup:
    """``setup`` with LiteLLM's version once ``import litellm`` worked in its interpreter, or
    turned into an error saying why it did not (so the run goes on without it)."""
    interpreter = setup.interpreter
    if interpreter is None:
        return setup
    code = "import litellm, importlib.metadata as m; print(m.version('litellm'))"
    try:
        done = subprocess.run(
            [interpreter.python, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=interpreter.environ(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return LiteLLMSetup(None, error=f"import litellm failed: {exc}", note=setup.note)
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:])
        return LiteLLMSetup(None, error=f"import litellm failed: {tail}", note=setup.note)
    lines = done.stdout.strip().splitlines()
    return LiteLLMSetup(interpreter, note=setup.note, version=lines[-1] if lines else None)
