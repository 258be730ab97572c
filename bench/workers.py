"""Child processes the harness drives: ``probe.py`` workers and one-shot probes, in either
virtualenv, each bounded by a timeout so no measurement can hang the run."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["PROBE", "Interpreter", "ProbeError", "Worker", "run_once"]

PROBE = Path(__file__).with_name("probe.py")
"""The measuring script, run by both interpreters."""


class ProbeError(RuntimeError):
    """A child process failed, answered with an error or did not answer in time."""


@dataclass(frozen=True)
class Interpreter:
    """A Python interpreter with the library under test, and the environment it needs.

    :ivar module: ``"promptdock"`` or ``"litellm"``: what ``probe.py`` imports.
    :ivar python: the interpreter's path.
    :ivar env: extra environment variables (LiteLLM needs its cost map offline).
    """

    module: str
    python: str
    env: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def promptdock(cls) -> Interpreter:
        """The harness's own interpreter, where promptdock is installed."""
        return cls("promptdock", sys.executable)

    @classmethod
    def litellm(cls, python: str) -> Interpreter:
        """LiteLLM's virtualenv, configured to run offline and quietly."""
        return cls(
            "litellm",
            python,
            {
                # Without this LiteLLM downloads its model cost map at import (and retries).
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_TELEMETRY": "False",
                "LITELLM_LOG": "ERROR",
            },
        )

    def environ(self) -> dict[str, str]:
        """The full environment of a child: this process's, plus :attr:`env`."""
        env = {**os.environ, **self.env}
        env.pop("PYTHONPATH", None)  # each interpreter sees only its own virtualenv
        # Installed programs run from cached bytecode; without it every import compiles.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def precompile(self, timeout: float) -> str | None:
        """Write the bytecode of everything importable from this interpreter (site-packages
        and editable sources), as an installer would; ``None``, or why it failed."""
        # -I keeps the working folder off sys.path: what is left, minus the standard library
        # (compiled when Python was installed), is site-packages and the editable sources.
        code = (
            "import sys, compileall, os\n"
            "base = sys.base_prefix\n"
            "paths = [p for p in sys.path if os.path.isdir(p) and not p.startswith(base)]\n"
            "ok = all([compileall.compile_dir(p, quiet=2, workers=0) for p in paths])\n"
            "sys.exit(0 if ok else 1)\n"
        )
        try:
            done = subprocess.run(
                [self.python, "-I", "-c", code],
                capture_output=True,
                text=True,
                env=self.environ(),
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"precompiling for {self.module} failed: {exc}"
        if done.returncode != 0:
            tail = " / ".join(done.stdout.strip().splitlines()[-3:])
            return f"precompiling for {self.module} reported errors: {tail}"
        return None


class Worker:
    """A ``probe.py worker`` child answering one JSON request at a time.

    Use as a context manager; :meth:`close` ends the child (closing its stdin first, then
    terminating it if it does not exit in time).
    """

    def __init__(self, interpreter: Interpreter, cwd: Path, log: Path) -> None:
        self.interpreter = interpreter
        self._log: IO[bytes] = log.open("ab")
        self._process = subprocess.Popen(
            [interpreter.python, str(PROBE), "worker", interpreter.module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=cwd,
            env=interpreter.environ(),
        )
        self._replies: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            self._replies.put(line)
        self._replies.put(b"")  # end of output: the child exited

    def request(self, timeout: float, **message: Any) -> dict[str, Any]:
        """Send ``message`` and wait at most ``timeout`` seconds for the reply."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise ProbeError(
                f"{self.interpreter.module} worker gave no answer to {message['op']!r} within "
                f"{timeout:.0f} s"
            ) from None
        except BrokenPipeError:
            line = b""
        if not line:
            raise ProbeError(
                f"{self.interpreter.module} worker exited (code {self._process.poll()}); "
                f"see {self._log.name}"
            )
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise ProbeError(f"{self.interpreter.module} worker: {reply['error']}")
        return reply

    def close(self) -> None:
        """End the child: EOF on its stdin, then SIGTERM and SIGKILL if it lingers."""
        with contextlib.suppress(OSError):
            if self._process.stdin is not None:
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def run_once(
    interpreter: Interpreter, args: list[str], cwd: Path, timeout: float, importtime: bool = True
) -> tuple[dict[str, Any], str]:
    """Run ``probe.py once MODULE *args`` in a fresh process; its JSON result and stderr."""
    command = [interpreter.python]
    if importtime:
        command += ["-X", "importtime"]
    command += [str(PROBE), "once", *args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=cwd,
            env=interpreter.environ(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{' '.join(command[:4])} ran longer than {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-3:]
        raise ProbeError(
            f"{interpreter.module} probe failed (exit {done.returncode}): {' / '.join(tail)}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result, done.stderr
