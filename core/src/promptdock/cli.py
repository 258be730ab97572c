"""The ``promptdock`` command: list, show, render and run prompts, lint them, list plugins.

Prompts come from ``--prompt-dir`` (a filesystem source named ``dotprompt``; environment
variable ``PROMPTDOCK_PROMPT_DIR``, default ``./prompts``) or from every source of a proxy
``--config`` file, of which ``--source`` picks one (default: the only one, else ``dotprompt``).

Exit status: 0 on success; 1 when a prompt is broken, a lint finds an error or a call fails;
2 for usage and configuration problems. Every promptdock error is one ``error: ...`` line on
stderr, never a traceback.

Startup matters (``promptdock check`` runs as a Git pre-commit hook), so Jinja2, YAML, JSON
Schema and HTTP libraries are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import click

from promptdock.errors import ConfigError, PluginLoadError, PromptdockError

if TYPE_CHECKING:
    from jinja2 import Environment
    from jinja2.nodes import Template

    from promptdock._dock import PromptDock
    from promptdock.config import ProxyConfig
    from promptdock.models import PromptFile, PromptInfo, Provenance, SourceConfig

__all__ = ["Finding", "check_config", "check_files", "main"]

DEFAULT_PROMPT_DIR = "./prompts"
USAGE_EXIT = 2
FAILURE_EXIT = 1

_F = TypeVar("_F", bound=Callable[..., Any])


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    click.echo(f"warning: {_one_line(str(message))}", err=True)


class _Main(click.Group):
    """A group that turns promptdock errors into one ``error:`` line and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        with warnings.catch_warnings():
            # A plugin that fails to load warns; show it as one line, not a Python warning.
            warnings.simplefilter("default", RuntimeWarning)
            warnings.showwarning = _show_warning
            try:
                return super().invoke(ctx)
            except PromptdockError as exc:
                click.echo(f"error: {_one_line(str(exc))}", err=True)
                usage = isinstance(exc, ConfigError | PluginLoadError)
                ctx.exit(USAGE_EXIT if usage else FAILURE_EXIT)


class _Session:
    """What the global options select: a config file, a prompt folder, a source."""

    def __init__(
        self,
        prompt_dir: str,
        prompt_dir_given: bool,
        config_path: str | None,
        source: str | None,
        *,
        announce_unused: bool = True,
    ) -> None:
        self.prompt_dir = prompt_dir
        self.prompt_dir_given = prompt_dir_given
        self.config_path = config_path
        self.source = source
        self.announce_unused = announce_unused

    @cached_property
    def config(self) -> ProxyConfig | None:
        if self.config_path is None:
            return None
        from promptdock.config import load_config

        # Unset variables are reported only when a command needs them: listing prompts
        # should not require the upstream API key.
        config = load_config(self.config_path, resolve_env=False)
        notice = config.unused_keys_warning()
        if notice is not None and self.announce_unused:
            click.echo(f"warning: {notice}", err=True)
        return config

    @cached_property
    def sources(self) -> dict[str, SourceConfig]:
        """The config's sources, plus ``--prompt-dir`` when given or when there is no config."""
        from promptdock.models import SourceConfig

        config = self.config
        sources = config.sources() if config is not None else {}
        if self.prompt_dir_given or not sources:
            # Absolute, like the folders of a config: a source is identified by its options,
            # and a relative path would name another folder after a change of directory.
            folder = os.path.abspath(os.path.expanduser(self.prompt_dir))
            sources["dotprompt"] = SourceConfig("dotprompt", "filesystem", {"path": folder})
        return sources

    @cached_property
    def dock(self) -> PromptDock:
        from promptdock._dock import PromptDock

        return PromptDock(sources=self.sources)

    def source_name(self) -> str:
        """The source a command reads from: ``--source``, the only one, or ``dotprompt``."""
        names = self.dock.source_names
        if self.source is not None:
            if self.source not in names:
                raise ConfigError(
                    f"unknown source {self.source!r} (--source); the sources are: "
                    f"{', '.join(names)}",
                    key="source",
                )
            chosen = self.source
        elif len(names) == 1:
            chosen = names[0]
        elif "dotprompt" in names:
            chosen = "dotprompt"
        else:
            raise ConfigError(
                f"several prompt sources are configured ({', '.join(names)}): pick one with "
                f"--source NAME",
                key="source",
            )
        self._require_env(chosen)
        return chosen

    def _require_env(self, source: str) -> None:
        config = self.config
        if config is None or source not in config.source_configs:
            return
        from promptdock.config import unresolved_env

        missing = unresolved_env(config.source_configs[source].options)
        if missing:
            ref = missing[0]
            raise ConfigError(
                f"{config.path}:{config.line_of(ref.key)}: {ref.key}: environment variable "
                f"{ref.var} is not set, and source {source!r} needs it; export it first",
                key=ref.key,
            )

    def filesystem_roots(self) -> list[str]:
        """The folders of the filesystem sources: where ``check`` looks by default."""
        from promptdock.config import FILESYSTEM_KINDS

        return [
            str(config.options["path"])
            for config in self.sources.values()
            if config.kind in FILESYSTEM_KINDS and isinstance(config.options.get("path"), str)
        ]


# ---------------------------------------------------------------------------------------------
# Shared options


def _parse_var(pair: str) -> tuple[str, str]:
    name, eq, value = pair.partition("=")
    if not eq or not name:
        raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
    return name, value


def _load_json_object(text: str, hint: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"invalid JSON: {exc}", param_hint=hint) from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"must be a JSON object of variables, got {type(value).__name__}", param_hint=hint
        )
    return value


def _variables(
    pairs: Sequence[str], vars_json: str | None, vars_file: str | None
) -> dict[str, Any]:
    """``--vars-json`` or ``--vars-file`` first, then each ``--var`` on top."""
    if vars_json is not None and vars_file is not None:
        raise click.UsageError("pass --vars-json or --vars-file, not both")
    variables: dict[str, Any] = {}
    if vars_json is not None:
        variables = _load_json_object(vars_json, "--vars-json")
    elif vars_file is not None:
        try:
            with open(vars_file, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            message = f"cannot read {vars_file}: {exc}"
            raise click.BadParameter(message, param_hint="--vars-file") from None
        variables = _load_json_object(text, "--vars-file")
    variables.update(_parse_var(pair) for pair in pairs)
    return variables


def _prompt_options(func: _F) -> _F:
    """``--version`` and the variable options shared by ``render`` and ``run``."""
    options = [
        click.option("--version", "version", type=click.IntRange(min=0), help="Use ID.vN.prompt."),
        click.option(
            "--vars-file",
            type=click.Path(exists=True, dir_okay=False),
            help="A JSON file holding an object of variables.",
        ),
        click.option("--vars-json", help="Variables as a JSON object (typed values)."),
        click.option(
            "--var",
            "pairs",
            multiple=True,
            metavar="NAME=VALUE",
            help="A string variable; repeat for more. Applied after --vars-json/--vars-file.",
        ),
    ]
    for option in options:
        func = option(func)
    return func


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------
# The group


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--prompt-dir",
    envvar="PROMPTDOCK_PROMPT_DIR",
    default=DEFAULT_PROMPT_DIR,
    show_default=True,
    metavar="DIR",
    help="Folder of .prompt files: the 'dotprompt' source. Env: PROMPTDOCK_PROMPT_DIR.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A LiteLLM-style proxy config.yaml: use its prompt sources.",
)
@click.option("--source", metavar="NAME", help="The source to read prompts from.")
@click.version_option(package_name="promptdock", prog_name="promptdock")
@click.pass_context
def main(ctx: click.Context, prompt_dir: str, config_path: str | None, source: str | None) -> None:
    """Keep LLM prompts as .prompt files in Git; list, render, run and check them."""
    given = ctx.get_parameter_source("prompt_dir") is click.core.ParameterSource.COMMANDLINE
    ctx.obj = _Session(prompt_dir, given, config_path, source)


# ---------------------------------------------------------------------------------------------
# list / show / render / run


def _versions_label(info: PromptInfo) -> str:
    labels = (["default"] if info.has_unversioned else []) + [f"v{v}" for v in info.versions]
    return ",".join(labels)


@main.command("list", short_help="List prompts, versions and descriptions.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool) -> None:
    """List the prompts of a source: id, versions, description (or why a file is broken)."""
    session: _Session = ctx.obj
    infos = session.dock.list_prompts(session.source_name())
    if as_json:
        click.echo(_dumps([asdict(info) for info in infos]))
    else:
        id_width = max((len(info.id) for info in infos), default=0)
        version_width = max((len(_versions_label(info)) for info in infos), default=0)
        for info in infos:
            tail = f"ERROR: {_one_line(info.error)}" if info.error else info.description or ""
            line = f"{info.id:<{id_width}}  {_versions_label(info):<{version_width}}  {tail}"
            click.echo(line.rstrip())
        if not infos:
            click.echo("no prompts found", err=True)
    if any(info.error for info in infos):
        ctx.exit(FAILURE_EXIT)


def _prompt_dict(prompt: PromptFile) -> dict[str, Any]:
    return {
        "id": prompt.id,
        "version": prompt.version,
        "path": prompt.path,
        "name": prompt.name,
        "description": prompt.description,
        "model": prompt.model,
        "params": dict(prompt.params),
        "input_schema": prompt.input_schema,
        "input_defaults": dict(prompt.input_defaults),
        "output_schema": prompt.output_schema,
        "output_format": prompt.output_format,
        "metadata": dict(prompt.metadata),
        "warnings": list(prompt.warnings),
        "provenance": prompt.provenance.as_dict() if prompt.provenance else None,
        "body": prompt.body,
    }


@main.command("show", short_help="Show a prompt's metadata and body.")
@click.argument("prompt_id", metavar="ID")
@click.option("--version", "version", type=click.IntRange(min=0), help="Show ID.vN.prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_obj
def show_command(session: _Session, prompt_id: str, version: int | None, as_json: bool) -> None:
    """Show a prompt's metadata (model, params, input schema, provenance) and body."""
    prompt = session.dock.get_prompt(prompt_id, source=session.source_name(), version=version)
    data = _prompt_dict(prompt)
    if as_json:
        click.echo(_dumps(data))
        return
    for key in ("id", "version", "path", "name", "description", "model", "output_format"):
        if data[key] is not None:
            click.echo(f"{key}: {data[key]}")
    for key in ("params", "input_defaults", "metadata"):
        if data[key]:
            click.echo(f"{key}: {json.dumps(data[key], ensure_ascii=False, default=str)}")
    for key in ("input_schema", "output_schema"):
        if data[key] is not None:
            click.echo(f"{key}:\n{_dumps(data[key])}")
    for warning in prompt.warnings:
        click.echo(f"warning: {warning}")
    if prompt.provenance is not None:
        click.echo(f"provenance: {_provenance_text(prompt.provenance)}")
    click.echo("---")
    click.echo(prompt.body)


@main.command("render", short_help="Render a prompt to JSON messages.")
@click.argument("prompt_id", metavar="ID")
@_prompt_options
@click.option("--strict", is_flag=True, help="Fail on undefined variables.")
@click.pass_obj
def render_command(
    session: _Session,
    prompt_id: str,
    pairs: tuple[str, ...],
    vars_json: str | None,
    vars_file: str | None,
    version: int | None,
    strict: bool,
) -> None:
    """Render a prompt and print {"model", "params", "messages"} as JSON."""
    from promptdock.models import RenderOptions

    variables = _variables(pairs, vars_json, vars_file)
    rendered = session.dock.render(
        prompt_id,
        variables,
        source=session.source_name(),
        version=version,
        options=RenderOptions(strict_undefined=True) if strict else None,
    )
    click.echo(
        _dumps(
            {
                "model": rendered.model,
                "params": dict(rendered.params),
                "messages": rendered.messages,
            }
        )
    )


def _provenance_text(provenance: Provenance) -> str:
    fields = provenance.as_dict()
    if not fields["is_stale"]:
        del fields["is_stale"]
    return " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)


def _stream_text(chunks: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for chunk in chunks:
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


@main.command("run", short_help="Render a prompt and call a model.")
@click.argument("prompt_id", metavar="ID")
@_prompt_options
@click.option(
    "--model",
    metavar="M",
    help="Upstream model when the prompt names none; 'mock/echo' answers offline.",
)
@click.option("--mock", metavar="TEXT", help="Answer with TEXT instead of calling a model.")
@click.option("--stream", is_flag=True, help="Print the answer as it arrives.")
@click.option("--api-base", metavar="URL", help="OpenAI-style base URL, ending in /v1.")
@click.option("--api-key-env", metavar="NAME", help="Environment variable holding the API key.")
@click.pass_obj
def run_command(
    session: _Session,
    prompt_id: str,
    pairs: tuple[str, ...],
    vars_json: str | None,
    vars_file: str | None,
    version: int | None,
    model: str | None,
    mock: str | None,
    stream: bool,
    api_base: str | None,
    api_key_env: str | None,
) -> None:
    """Render a prompt, send it to a model, print the answer (provenance on stderr)."""
    variables = _variables(pairs, vars_json, vars_file)
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(
                f"environment variable {api_key_env} (from --api-key-env) is not set",
                key="api_key_env",
            )
    source = session.source_name()
    prompt = session.dock.get_prompt(prompt_id, source=source, version=version)
    # The prompt's own model wins over the one after the prefix, so any placeholder will do
    # when it has one; a mock answer needs no real model either.
    upstream = model or prompt.model or ("mock" if mock is not None else None)
    if not upstream:
        raise click.UsageError(
            f"prompt {prompt_id!r} names no model: pass --model, e.g. --model gpt-4o-mini "
            f"(or --model mock/echo to run offline)"
        )
    result = session.dock.completion(
        model=f"{source}/{upstream}",
        prompt_id=prompt_id,
        prompt_variables=variables,
        prompt_version=version,
        stream=stream,
        mock_response=mock,
        api_base=api_base,
        api_key=api_key,
    )
    from promptdock.response import ModelResponse

    if isinstance(result, ModelResponse):
        click.echo(result.choices[0].message.content or "")
    else:
        for piece in _stream_text(result):
            click.echo(piece, nl=False)
        click.echo()
    if result.prompt is not None:
        click.echo(f"provenance: {_provenance_text(result.prompt)}", err=True)


# ---------------------------------------------------------------------------------------------
# check


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
        self.findings.append(Finding(self.display, line or 1, severity, message))

    def run(self) -> list[Finding]:
        from promptdock.errors import PromptSyntaxError
        from promptdock.prompt_file import parse_prompt

        try:
            with open(self.file, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            self.add(1, "error", f"cannot read the file: {exc.strerror}")
            return self.findings
        prompt_id = os.path.relpath(self.file, self.root).removesuffix(".prompt")
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
            quiet = not report or getattr(node, "ignore_missing", False)
            included = self._include(target.value, line, quiet)
            if included is None or included in seen:
                continue
            seen.add(included)
            for name in self._included_names(included, seen):
                used.setdefault(name, _Use(line, target.value))
        return used

    def _include(self, name: str, line: int, quiet: bool) -> str | None:
        path = os.path.join(self.root, name)
        if not os.path.isfile(path) and not name.endswith(".prompt"):
            path += ".prompt"
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(self.root) + os.sep):
            if not quiet:
                self.add(line, "error", f"include {name!r} points outside the prompt folder")
            return None
        if os.path.isfile(real):
            return real
        if not quiet:
            looked = _display(os.path.join(self.root, name))
            if not name.endswith(".prompt"):
                looked += f" and {looked}.prompt"
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
        found.extend(os.path.join(folder, f) for f in sorted(files) if f.endswith(".prompt"))
    return found


def _display(path: str) -> str:
    """``path`` as short as it can be written: relative when it is under the working folder."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith(os.pardir) else os.path.normpath(path)


def _root_for(file: str, roots: Sequence[str]) -> str:
    """The prompt folder a file belongs to: includes resolve from there."""
    real = os.path.realpath(file)
    for root in roots:
        if real.startswith(os.path.realpath(root) + os.sep):
            return root
    return os.path.dirname(file) or "."


def check_files(targets: Sequence[str], roots: Sequence[str] = ()) -> tuple[list[Finding], int]:
    """Lint ``.prompt`` files and folders (recursively).

    :param targets: files and folders to check.
    :param roots: prompt folders; a file inside one resolves its includes from it (a folder
        target is its own root).
    :returns: the findings, sorted by file and line, and the number of files checked.
    """
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


def _config_error_finding(display: str, exc: ConfigError) -> Finding:
    text = str(exc)
    located = re.match(rf"{re.escape(display)}:(\d+): ", text)
    if located:
        return Finding(display, int(located.group(1)), "error", text[located.end() :])
    return Finding(display, 1, "error", _strip_location(text, display))


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


@main.command("check", short_help="Lint .prompt files (and a proxy config).")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Also check this proxy config (defaults to the global --config).",
)
@click.pass_context
def check_command(ctx: click.Context, paths: tuple[str, ...], config_path: str | None) -> None:
    """Lint .prompt files (default: the prompt folders); exit 1 on any error.

    Reports YAML and frontmatter errors, template syntax errors, unknown frontmatter keys,
    variables used but not declared in input.schema (and declared but unused), invalid
    schemas and includes that do not resolve, as 'path:line: error|warning: message'.
    """
    given: _Session = ctx.obj
    # Unused config keys are findings here, so the session does not announce them too.
    session = _Session(
        given.prompt_dir,
        given.prompt_dir_given,
        config_path or given.config_path,
        None,
        announce_unused=False,
    )
    config_findings: list[Finding] = []
    try:
        roots = session.filesystem_roots()
        if session.config is not None:
            config_findings = check_config(session.config)
    except ConfigError as exc:
        if session.config_path is None:
            raise
        config_findings = [_config_error_finding(session.config_path, exc)]  # a broken config
        roots = []
    targets = list(paths) or roots
    for root in targets:
        if not os.path.exists(root):
            raise ConfigError(
                f"prompt folder {_display(root)} does not exist: pass files or folders to "
                f"check, or --prompt-dir DIR",
                key="prompt_dir",
            )
    file_findings, count = check_files(targets, roots)
    findings = file_findings + config_findings
    for finding in findings:
        click.echo(str(finding))
    errors = sum(finding.severity == "error" for finding in findings)
    warnings_count = len(findings) - errors
    click.echo(
        f"checked {count} prompt file{'s' if count != 1 else ''}"
        f"{' and ' + session.config_path if session.config_path else ''}: "
        f"{errors} error{'s' if errors != 1 else ''}, "
        f"{warnings_count} warning{'s' if warnings_count != 1 else ''}"
    )
    if errors:
        ctx.exit(FAILURE_EXIT)


# ---------------------------------------------------------------------------------------------
# plugins


@main.command("plugins", short_help="List plugins, their hooks and load errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def plugins_command(as_json: bool) -> None:
    """List every plugin: version, built-in or not, hooks, and load errors."""
    from promptdock._manager import PluginHost

    records = PluginHost().plugins()
    if as_json:
        click.echo(_dumps([asdict(record) for record in records]))
        return
    rows = [
        (
            record.name,
            "builtin" if record.builtin else f"{record.distribution} {record.version}",
            f"FAILED: {_one_line(record.error)}"
            if record.error
            else f"hooks: {', '.join(record.hooks) or '-'}",
        )
        for record in records
    ]
    name_width = max((len(row[0]) for row in rows), default=0)
    origin_width = max((len(row[1]) for row in rows), default=0)
    for name, origin, detail in rows:
        click.echo(f"{name:<{name_width}}  {origin:<{origin_width}}  {detail}")


# ---------------------------------------------------------------------------------------------
# serve


@main.command("serve", short_help="Run the OpenAI-compatible proxy.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="The proxy's config.yaml (defaults to the global --config).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=4000, show_default=True, help="TCP port."
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes, each with its own connections and caches.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option(
    "--access-log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One key=value line or one JSON object per request, on stdout.",
)
@click.pass_obj
def serve_command(
    session: _Session,
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    access_log_format: str,
) -> None:
    """Serve the prompts of a LiteLLM-style config.yaml over an OpenAI-compatible API.

    Stops on Ctrl+C or SIGTERM after in-flight requests finish. Needs the [proxy] extra.
    """
    from promptdock.config import load_config

    path = config_path or session.config_path
    if path is None:
        raise click.UsageError("pass --config config.yaml: the proxy serves a config file")
    config = load_config(path)
    # Imported after the config is read, so a config error is reported without the
    # server stack (and its import time).
    from promptdock.proxy.server import build_app, serve

    log_format: Literal["text", "json"] = "json" if access_log_format == "json" else "text"
    app = build_app(config, host, log_format)
    for notice in [config.unused_keys_warning(), *app.warnings]:
        if notice is not None:
            click.echo(f"warning: {_one_line(notice)}", err=True)
    serve(
        app,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log_format=log_format,
    )


if __name__ == "__main__":  # pragma: no cover - `python -m promptdock.cli`
    sys.exit(main())
