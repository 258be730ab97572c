"""A measuring child process that runs the same code against promptdock or LiteLLM.

Both libraries offer ``MODULE.global_prompt_directory`` and ``MODULE.completion(model=...,
prompt_id=..., prompt_variables=...)``, so one script measures both, each in its own
virtualenv. It imports only the standard library besides the module under test (and
``jinja2`` for the floor), so it runs unchanged in LiteLLM's virtualenv.

Two modes:

- ``probe.py once MODULE PROMPT_DIR PROMPT_ID VARIABLES_JSON``: import ``MODULE`` first
  (run it under ``python -X importtime``), serve one prompt with ``mock_response``, print one
  JSON line with the import and first-call times and the resident memory. ``MODULE`` may be
  ``-`` for a bare interpreter (the baseline).
- ``probe.py worker MODULE``: answer JSON requests, one per stdin line, with one JSON line on
  the real stdout. Operations: ``setup``, ``completion``, ``floor``, ``check``, ``profile``,
  ``rss``, ``quit``. A closed stdin ends the worker, so it never outlives the harness.
"""

from __future__ import annotations

import sys
import time

if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "once":
    # Import the module before anything else, so -X importtime charges it everything it needs.
    _started = time.perf_counter()
    if sys.argv[2] != "-":
        __import__(sys.argv[2])
    _IMPORT_SECONDS = time.perf_counter() - _started

import importlib
import json
import os
import re
from collections.abc import Callable
from typing import Any

__all__ = ["ROLE_LINE", "floor_call", "main", "resident_kib"]

ROLE_LINE = re.compile(r"\n(system|user|assistant):[ \t]?", re.IGNORECASE)
"""Where a hand-written app would split the rendered text into messages (anchored on a
newline, a literal prefix the regex engine searches for fast)."""


def resident_kib() -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of this process, in KiB, from ``/proc/self/status``."""
    found: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[:5]] = int(line.split()[1])
    return {"rss_kib": found.get("VmRSS", -1), "hwm_kib": found.get("VmHWM", -1)}


def floor_call(body: str, variables: dict[str, Any]) -> Callable[[], list[dict[str, str]]]:
    """The floor: a precompiled plain ``jinja2`` template of ``body``, split into messages by
    hand (the text before the first role line, if any, is the user's)."""
    import jinja2

    template = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(body)

    def call() -> list[dict[str, str]]:
        text = "\n" + template.render(variables)
        marks = list(ROLE_LINE.finditer(text))
        messages = []
        head = text[: marks[0].start()].strip() if marks else text.strip()
        if head:
            messages.append({"role": "user", "content": head})
        for index, mark in enumerate(marks):
            end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
            messages.append({"role": mark[1].lower(), "content": text[mark.end() : end].strip()})
        return messages

    return call


def _http_floor(
    render: Callable[[], list[dict[str, str]]], api_base: str, api_key: str, fields: dict[str, Any]
) -> Callable[[], object]:
    """The floor plus the least a client can do: one keep-alive ``http.client`` POST."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(api_base)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    path = url.path.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    def call() -> object:
        payload = json.dumps({**fields, "messages": render()}).encode()
        connection.request("POST", path, payload, headers)
        answer = connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"upstream answered {answer.status}: {data[:200]!r}")
        return json.loads(data)

    return call


def _timed(call: Callable[[], object], calls: int) -> dict[str, Any]:
    """Wall nanoseconds of each of ``calls`` calls (after one untimed warm-up call), and the
    CPU nanoseconds this thread spent on all of them (blind to time spent descheduled)."""
    call()
    clock = time.perf_counter_ns
    samples = []
    cpu = time.thread_time_ns()
    for _ in range(calls):
        started = clock()
        call()
        samples.append(clock() - started)
    return {"ns": samples, "cpu_ns": time.thread_time_ns() - cpu}


def _profile(
    call: Callable[[], object], calls: int, order: str = "own", top: int = 12
) -> list[dict[str, Any]]:
    """cProfile's view of ``calls`` calls: the functions with the most own (or cumulative)
    time, per call."""
    import cProfile
    import pstats

    call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    # {(file, line, function): (primitive calls, calls, own time, cumulative time, callers)}
    table: dict[Any, Any] = vars(pstats.Stats(profiler))["stats"]
    column = 3 if order == "cumulative" else 2
    rows = sorted(table.items(), key=lambda item: item[1][column], reverse=True)[:top]
    return [
        {
            "function": f"{os.path.basename(where[0])}:{where[1]}({where[2]})",
            "calls_per_call": stat[1] / calls,
            "own_us_per_call": stat[2] / calls * 1e6,
            "cumulative_us_per_call": stat[3] / calls * 1e6,
        }
        for where, stat in rows
    ]


class _Worker:
    """The state of ``probe.py worker``: the module under test and its prompt folder."""

    def __init__(self, module_name: str) -> None:
        started = time.perf_counter()
        self.module: Any = importlib.import_module(module_name)
        self.import_seconds = time.perf_counter() - started
        self.name = module_name

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "setup":
            self.module.global_prompt_directory = request["prompt_dir"]
            return {"import_s": self.import_seconds, "versions": _versions(self.name)}
        if op == "completion":
            return _timed(self._completion(request), int(request["calls"]))
        if op == "floor":
            render = floor_call(request["body"], request["variables"])
            call: Callable[[], object] = render
            if request.get("api_base"):
                call = _http_floor(
                    render, request["api_base"], request["api_key"], request["fields"]
                )
            return _timed(call, int(request["calls"]))
        if op == "profile":
            order = request.get("order", "own")
            return {"top": _profile(self._completion(request), int(request["calls"]), order)}
        if op == "check":
            reply = self._completion(request)()
            return {"content": reply.choices[0].message.content}
        if op == "rss":
            return resident_kib()
        raise ValueError(f"unknown op {op!r}")

    def _completion(self, request: dict[str, Any]) -> Callable[[], Any]:
        completion = self.module.completion
        arguments: dict[str, Any] = {
            "model": request.get("model", "dotprompt/gpt-4"),
            "prompt_id": request["prompt_id"],
            "prompt_variables": request["variables"],
        }
        if request.get("api_base"):
            arguments["api_base"] = request["api_base"]
            arguments["api_key"] = request["api_key"]
        else:
            arguments["mock_response"] = request.get("mock_response") or "Paris."
        return lambda: completion(**arguments)


def _versions(module_name: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in (module_name, "jinja2", "openai", "pluggy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _serve(module_name: str) -> None:
    # Libraries may print; keep the real stdout for replies and send everything else to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    worker = _Worker(module_name)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply = worker.handle(request)
        except Exception as exc:  # reported to the harness, which stops the run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _once(module_name: str, prompt_dir: str, prompt_id: str, variables: str) -> None:
    result: dict[str, Any] = {"import_s": _IMPORT_SECONDS, **resident_kib()}
    result["rss_import_kib"] = result.pop("rss_kib")
    if module_name != "-":
        module: Any = sys.modules[module_name]
        module.global_prompt_directory = prompt_dir
        started = time.perf_counter()
        reply = module.completion(
            model="dotprompt/gpt-4",
            prompt_id=prompt_id,
            prompt_variables=json.loads(variables),
            mock_response="Paris.",
        )
        result["first_call_s"] = time.perf_counter() - started
        result["content"] = reply.choices[0].message.content
    result.update(resident_kib())
    print(json.dumps(result))


def main(argv: list[str]) -> None:
    """Run the mode named by ``argv[0]`` (see the module docstring)."""
    if argv[:1] == ["once"] and len(argv) == 5:
        _once(*argv[1:])
    elif argv[:1] == ["worker"] and len(argv) == 2:
        _serve(argv[1])
    else:
        raise SystemExit(f"usage: {__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
