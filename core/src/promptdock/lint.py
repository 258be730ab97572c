"""The linter behind ``promptdock check``: problems in ``.prompt`` files and proxy configs.

:func:`check_files` reads each file the way a source would and reports, without rendering:
frontmatter and YAML errors, template syntax errors (unknown filters and tests too), variables
used but not declared in ``input.schema`` (and declared but unused), invalid JSON Schemas, and
includes that do not resolve or that every render would refuse. :func:`check_config` checks a
proxy config: unset ``os.environ/`` variables, deployments whose prompt does not load, keys
promptdock ignores. Each problem is a :class:`Finding` with a file and a line.

Jinja2 and JSON Schema are imported when a file is checked, not with this module: ``promptdock
check`` runs as a Git pre-commit hook, where start-up time is felt.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from promptdock.errors import (
    ConfigError,
    PromptdockError,
    PromptSyntaxError,
    UnsafePromptIdError,
)
from promptdock.ids import PROMPT_SUFFIX, check_prompt_id

if TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2.nodes import Template

    from promptdock.config import ProxyConfig
    from promptdock.models import PromptFile

__all__ = ["Finding", "check_config", "check_files"]


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


@dataclass(frozen=True, order=True)
class Finding:
    """One problem ``promptdock check`` reports, printed as ``path:line: severity: message``.

    :ivar path: the file, as the user named it.
    :ivar line: 1-based line in that file.
    :ivar severity: ``"error"`` (fails the check) or ``"warning"``.
    :ivar message: what is wrong and how to fix it.
    """

    path: str
    line: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"

    @classmethod
    def from_error(cls, path: str, error: PromptdockError) -> Finding:
        """The error finding for ``error``, raised while reading the file ``path``.

        A message that starts with ``path:line:`` (as config errors do) gives the finding that
        line and loses the prefix; any other message is the finding of line 1.
        """
        text = _one_line(str(error))
        located = re.match(rf"{re.escape(path)}:(\d+): ", text)
        if located:
            return cls(path, int(located.group(1)), "error", text[located.end() :])
        return cls(path, 1, "error", _strip_location(text, path))


_LINE_HINT = re.compile(r" ?\(line (\d+)\)")
_NOT_VARIABLES = frozenset({"loop", "self", "varargs", "kwargs", "caller"})


class _Use(NamedTuple):
    """Where a template first reads a variable: a line, and the include it comes through."""

    line: int
    include: str = ""


def _plain_environment() -> Environment:
    from jinja2 import Environment

    # Only parsed and compiled, never rendered: escaping settings do not matter here.
    env = Environment(keep_trailing_newline=True)
    # The renderer's own filter; the lint must not call it unknown.
    env.filters["json"] = json.dumps
    return env


def _strip_location(message: str, path: str) -> str:
    """Drop the ``path:line[:col]: `` prefix a message already carries."""
    prefix = re.match(rf"{re.escape(path)}(?::\d+){{0,2}}: ", message)
    return message[prefix.end() :] if prefix else message


class _FileLinter:
    """Lints one ``.prompt`` file: frontmatter, template syntax, variables, schemas, includes."""

    def __init__(self, env: Environment, root: str, file: str, display: str) -> None:
        self.env = env
        self.root = root
        self.file = file
        self.display = display
        self.findings: list[Finding] = []
        self.lines: list[str] = []

    def add(self, line: int | None, severity: str, message: str) -> None:
        """Record a finding at ``line`` (line 1 when unknown)."""
        self.findings.append(Finding(self.display, line or 1, severity, message))

    def run(self) -> list[Finding]:
        """Read, parse and lint the file; the findings, in the order found."""
        from promptdock.prompt_file import parse_prompt

        try:
            with open(self.file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            self.add(1, "error", f"cannot read the file: {exc.strerror}")
            return self.findings
        prompt_id = os.path.relpath(self.file, self.root).removesuffix(PROMPT_SUFFIX)
        try:
            prompt = parse_prompt(data, name=prompt_id.replace(os.sep, "/"), path=self.display)
        except PromptSyntaxError as exc:
            self.add(exc.line, "error", _strip_location(str(exc), self.display))
            return self.findings
        self.lines = data.decode("utf-8").splitlines()
        for warning in prompt.warnings:
            hint = _LINE_HINT.search(warning)
            line = int(hint.group(1)) if hint else None
            self.add(line, "warning", _LINE_HINT.sub("", warning))
        self._schemas(prompt)
        ast = self._parse(prompt.body, prompt.body_line)
        if ast is not None:
            used = self._used(ast, prompt.body_line, set())
            if prompt.model and ("{{" in prompt.model or "{%" in prompt.model):
                model_line = self._key_line("model")
                model_ast = self._parse(prompt.model, model_line)
                if model_ast is not None:
                    for name, use in self._names(model_ast, model_line).items():
                        used.setdefault(name, use)
            self._variables(prompt, used)
        return self.findings

    # -- template ------------------------------------------------------------------------

    def _parse(self, source: str, first_line: int) -> Template | None:
        from jinja2 import TemplateSyntaxError

        try:
            ast = self.env.parse(source)
            # Parsing alone misses unknown filters and tests; compiling finds them.
            self.env.compile(ast)
        except TemplateSyntaxError as exc:
            self.add(
                first_line + (exc.lineno or 1) - 1,
                "error",
                f"template syntax error: {(exc.message or '').rstrip('.')}; fix the Jinja2 "
                "syntax (every "
                "{% if %}/{% for %} closed, every {{ with its }})",
            )
            return None
        return ast

    def _names(self, ast: Template, first_line: int) -> dict[str, _Use]:
        """Variables the template reads from its context, each with the first line it is used."""
        from jinja2 import meta, nodes

        undeclared = meta.find_undeclared_variables(ast)
        assigned = {
            node.name for node in ast.find_all(nodes.Name) if node.ctx in ("store", "param")
        }
        wanted = undeclared - assigned - _NOT_VARIABLES - set(self.env.globals)
        found: dict[str, _Use] = {}
        for node in ast.find_all(nodes.Name):
            if node.name in wanted and node.ctx == "load":
                use = _Use(first_line + node.lineno - 1)
                found[node.name] = min(use, found.get(node.name, use))
        return found

    def _used(
        self, ast: Template, first_line: int, seen: set[str], *, report: bool = True
    ) -> dict[str, _Use]:
        """:meth:`_names`, plus those of included files; reports includes that do not resolve.

        Inside an included file (``report=False``) problems are left to that file's own check.
        """
        from jinja2 import nodes

        used = self._names(ast, first_line)
        loads = (nodes.Include, nodes.Import, nodes.FromImport)
        for node in ast.find_all(loads):
            assert isinstance(node, loads)
            target = node.template
            if not isinstance(target, nodes.Const) or not isinstance(target.value, str):
                continue  # a computed name: only known at render time
            line = first_line + node.lineno - 1
            optional = bool(getattr(node, "ignore_missing", False))
            included = self._include(target.value, line, report=report, optional=optional)
            if included is None or included in seen:
                continue
            seen.add(included)
            for name in self._included_names(included, seen):
                used.setdefault(name, _Use(line, target.value))
        return used

    def _include(self, name: str, line: int, *, report: bool, optional: bool) -> str | None:
        """The file an include names, resolved with the rules of the filesystem source.

        :param report: whether to report problems (not inside an included file).
        :param optional: ``ignore missing`` was written: a missing file is no problem. A name
            no source accepts (``../x``, ``a/../b``) is reported all the same: it can never
            name a file, so it is a mistake, not an optional part.
        """
        try:
            check_prompt_id(name)
        except UnsafePromptIdError as exc:
            if report:
                self.add(
                    line,
                    "error",
                    f"include name {name!r} is not allowed: {_refusal(exc, name)}; every render "
                    f"refuses it. Name the file by its path from the prompt folder, without "
                    f"'..' or '.' segments",
                )
            return None
        quiet = not report or optional
        path = os.path.join(self.root, name)
        if not os.path.isfile(path) and not name.endswith(PROMPT_SUFFIX):
            path += PROMPT_SUFFIX
        if not _within(path, self.root):
            if not quiet:
                self.add(line, "error", f"include {name!r} points outside the prompt folder")
            return None
        real = os.path.realpath(path)
        if os.path.isfile(real):
            return real
        if not quiet:
            looked = _display(os.path.join(self.root, name))
            if not name.endswith(PROMPT_SUFFIX):
                looked += f" and {looked}{PROMPT_SUFFIX}"
            self.add(
                line,
                "error",
                f"included file {name!r} not found (looked for {looked}); fix the name or add "
                f"the file",
            )
        return None

    def _included_names(self, path: str, seen: set[str]) -> Iterable[str]:
        from jinja2 import TemplateSyntaxError

        from promptdock.prompt_file import split_frontmatter

        try:
            with open(path, encoding="utf-8") as handle:
                body = split_frontmatter(handle.read()).body
            ast = self.env.parse(body)
        except (OSError, UnicodeDecodeError, TemplateSyntaxError, PromptdockError):
            return ()  # the included file gets its own findings when its folder is checked
        return self._used(ast, 1, seen, report=False).keys()

    # -- frontmatter ---------------------------------------------------------------------

    def _key_line(self, key: str, after: int = 0, *, indented: bool = False) -> int:
        """The first line (after line ``after``) that starts the YAML key ``key``."""
        indent = r"\s+" if indented else ""
        pattern = re.compile(rf"^{indent}{re.escape(key)}\??\s*[:(]")
        for number, text in enumerate(self.lines[after:], start=after + 1):
            if pattern.match(text):
                return number
        return after or 1

    def _schemas(self, prompt: PromptFile) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        for section, schema in (("input", prompt.input_schema), ("output", prompt.output_schema)):
            if schema is None:
                continue
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                where = "".join(f"[{part!r}]" for part in exc.absolute_path)
                self.add(
                    self._key_line(section),
                    "error",
                    f"{section}.schema{where} is not a valid JSON Schema: {exc.message}; fix it "
                    "(Draft 2020-12) or write it in Picoschema",
                )

    def _variables(self, prompt: PromptFile, used: Mapping[str, _Use]) -> None:
        schema = prompt.input_schema
        properties = schema.get("properties") if schema is not None else None
        if not isinstance(properties, Mapping):
            return
        from difflib import get_close_matches

        declared = set(properties) | set(prompt.input_defaults)
        for name in sorted(set(used) - declared, key=lambda n: (used[n], n)):
            use = used[name]
            where = f"the file {use.include!r} included here" if use.include else "the template"
            close = get_close_matches(name, declared, n=1)
            hint = f"did you mean {close[0]!r}? Otherwise " if close else ""
            self.add(
                use.line,
                "error",
                f"variable {name!r} is used in {where} but not declared in input.schema; "
                f"{hint}declare it (e.g. '{name}?: string')",
            )
        input_line = self._key_line("input")
        for name in sorted(set(properties) - set(used)):
            self.add(
                self._key_line(name, input_line, indented=True),
                "warning",
                f"variable {name!r} is declared in input.schema but never used in the template",
            )


def _prompt_files(target: str) -> list[str]:
    if os.path.isfile(target):
        return [target]
    found: list[str] = []
    for folder, dirs, files in os.walk(target):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.endswith(PROMPT_SUFFIX))
    return found


def _display(path: str) -> str:
    """``path`` as short as it can be written: relative when it is under the working folder."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith(os.pardir) else os.path.normpath(path)


def _refusal(exc: UnsafePromptIdError, name: str) -> str:
    """Why ``check_prompt_id`` refused ``name``, without its advice about prompt ids (an
    include may end in ``.prompt``); its whole message if that cannot be told apart."""
    text = _one_line(str(exc))
    return text.removeprefix(f"refused prompt id {name!r}: ").split(". Prompt ids are", 1)[0]


def _within(path: str, root: str) -> bool:
    """Whether ``path``, links followed, is inside the folder ``root`` (links followed too)."""
    real_root = os.path.realpath(root)
    return os.path.realpath(path).startswith(real_root.rstrip(os.sep) + os.sep)


def _root_for(file: str, roots: Sequence[str]) -> str:
    """The prompt folder a file belongs to: includes resolve from there."""
    for root in roots:
        if _within(file, root):
            return root
    return os.path.dirname(file) or "."


def check_files(targets: Sequence[str], roots: Sequence[str] = ()) -> tuple[list[Finding], int]:
    """Lint ``.prompt`` files and folders (recursively).

    :param targets: files and folders to check.
    :param roots: prompt folders; a file inside one resolves its includes from it (a folder
        target is its own root).
    :returns: the findings, sorted by file and line, and the number of files checked.
    :raises ConfigError: a target does not exist.
    """
    for target in targets:
        if not os.path.exists(target):
            raise ConfigError(
                f"prompt folder {_display(target)} does not exist: pass files or folders to "
                f"check, or --prompt-dir DIR",
                key="prompt_dir",
            )
    env = _plain_environment()
    findings: list[Finding] = []
    count = 0
    for target in targets:
        is_folder = os.path.isdir(target)
        for file in _prompt_files(target):
            root = target if is_folder else _root_for(file, roots)
            findings.extend(_FileLinter(env, root, file, _display(file)).run())
            count += 1
    return sorted(findings), count


def check_config(config: ProxyConfig) -> list[Finding]:
    """Check a proxy config: every ``os.environ/`` variable set, every deployment's prompt loads.

    Keys promptdock ignores are warnings. Load ``config`` with ``resolve_env=False`` so that
    every unset variable is reported, not only the first.
    """
    from promptdock.config import unresolved_env

    path = config.path
    findings = [
        Finding(path, config.line_of(key) or 1, "warning", f"{key} is not used by promptdock")
        for key in config.unused_keys
    ]
    findings.extend(
        Finding(
            path,
            config.line_of(key) or 1,
            "error",
            f"environment variable {var} is not set ({key}); export it before starting the proxy",
        )
        for key, var in config.unresolved_env
    )
    dock = config.make_dock()
    sources = config.source_configs
    for deployment in config.deployments:
        if deployment.prompt_id is None:
            continue
        key = f"{deployment.key}.litellm_params.prompt_id"
        who = f"deployment {deployment.model_name!r}"
        source = deployment.source
        if source is None or source not in sources:
            findings.append(
                Finding(
                    path,
                    config.line_of(f"{deployment.key}.litellm_params.model") or 1,
                    "error",
                    f"{who}: model {deployment.model!r} must be '<source>/<model>' with a "
                    f"configured source ({', '.join(sorted(sources)) or 'none configured'})",
                )
            )
            continue
        if unresolved_env(sources[source].options):
            continue  # already reported: the source cannot be reached without it
        try:
            dock.get_prompt(deployment.prompt_id, source=source, version=deployment.prompt_version)
        except PromptdockError as exc:
            findings.append(
                Finding(path, config.line_of(key) or 1, "error", f"{who}: {_one_line(str(exc))}")
            )
    return sorted(findings)
