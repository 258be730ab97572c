"""The ``promptdock`` command: list, show, render and run prompts, lint them, list plugins.

Prompts come from ``--prompt-dir`` (a filesystem source named ``dotprompt``; environment
variable ``PROMPTDOCK_PROMPT_DIR``, default ``prompts``) or from every source of a proxy
``--config`` file, of which ``--source`` picks one (default: the only one, else ``dotprompt``).
The linter behind ``check`` is :mod:`promptdock.lint`.

Exit status: 0 on success; 1 when a prompt is broken, a lint finds an error, a call fails or
a plugin failed to load; 2 for usage and configuration problems. Every promptdock error is one
``error: ...`` line on stderr, never a traceback.

Startup matters (``promptdock check`` runs as a Git pre-commit hook), so Jinja2, YAML, JSON
Schema and HTTP libraries are imported inside the commands that use them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from promptdock._globals import DEFAULT_PROMPT_DIR
from promptdock.errors import ConfigError, PluginLoadError, PromptdockError

if TYPE_CHECKING:
    from promptdock._dock import PromptDock
    from promptdock._manager import PluginRecord
    from promptdock.config import ProxyConfig
    from promptdock.lint import Finding
    from promptdock.models import PromptFile, PromptInfo, Provenance, SourceConfig

__all__ = ["main"]

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
        config = self.config
        if config is not None and chosen in config.source_configs:
            self.require_env(config.source_configs[chosen].options, f"source {chosen!r}")
        return chosen

    def require_env(self, values: object, user: str) -> None:
        """Fail when ``values`` hold an ``os.environ/`` reference to an unset variable.

        :param user: what needs the values, for the message (``"source 'team'"``).
        """
        config = self.config
        if config is None:
            return
        from promptdock.config import unresolved_env

        missing = unresolved_env(values)
        if missing:
            ref = missing[0]
            raise ConfigError(
                f"{config.path}:{config.line_of(ref.key)}: {ref.key}: environment variable "
                f"{ref.var} is not set, and {user} needs it; export it first",
                key=ref.key,
            )

    def deployment(self, model_name: str) -> tuple[str, dict[str, Any]] | None:
        """The config's first deployment named ``model_name``, read as the proxy reads it.

        :returns: its upstream model (the part after the source prefix) and the
            ``prepare_request`` keywords of its ``litellm_params`` (``api_base``,
            ``api_key``, ``timeout``, sampling parameters...); ``None`` without ``--config``
            or when no deployment has that name.
        """
        config = self.config
        if config is None or not config.deployments_named(model_name):
            return None
        from promptdock.proxy.routing import build_routes

        route = build_routes(config, self.dock).get(model_name)
        if route is None:
            return None
        target = route.targets[0]
        upstream = target.model.partition("/")[2] if target.source is not None else target.model
        return upstream, dict(target.options)

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


# Not a model name anyone can write in a frontmatter; see run_command.
_NO_MODEL = "\x00no model"


def _no_model(session: _Session, prompt_id: str, source: str, version: int | None) -> str:
    written = session.dock.get_prompt(prompt_id, source=source, version=version).model
    why = f"its model {written!r} rendered empty; set the variables it uses, or " if written else ""
    return (
        f"prompt {prompt_id!r} names no model: {why}pass --model, e.g. --model gpt-4o-mini (or "
        f"--model mock/echo to run offline)"
    )


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
    help="Upstream model when the prompt names none, or a deployment (model_name) of --config; "
    "'mock/echo' answers offline.",
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
    """Render a prompt, send it to a model, print the answer (provenance on stderr).

    The model is the prompt's own (rendered) model, else --model, which may also name a
    deployment of --config: its litellm_params then apply, below --api-base and --api-key-env.
    """
    variables = _variables(pairs, vars_json, vars_file)
    options: dict[str, Any] = {}
    named = model
    deployment = session.deployment(named) if named is not None else None
    if deployment is not None:
        model, options = deployment
    if api_base is not None:
        options["api_base"] = api_base
    if api_key_env is not None:
        options["api_key"] = os.environ.get(api_key_env)
        if not options["api_key"]:
            raise ConfigError(
                f"environment variable {api_key_env} (from --api-key-env) is not set",
                key="api_key_env",
            )
    source = session.source_name()
    if deployment is not None:
        session.require_env(options, f"deployment {named!r}")
    # The dock picks the model as completion() does: the prompt's rendered model, else the one
    # after the prefix. A mock answer needs no real model; without one, the placeholder
    # coming back means the prompt names none either.
    fallback = model or ("mock" if mock is not None else _NO_MODEL)
    request = session.dock.prepare_request(
        f"{source}/{fallback}",
        prompt_id=prompt_id,
        prompt_variables=variables,
        prompt_version=version,
        stream=stream,
        mock_response=mock,
        **options,
    )
    if request.model == _NO_MODEL:
        raise click.UsageError(_no_model(session, prompt_id, source, version))
    result = session.dock.send(request)
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
    from promptdock.lint import Finding, check_config, check_files

    config_findings: list[Finding] = []
    try:
        roots = session.filesystem_roots()
        if session.config is not None:
            config_findings = check_config(session.config)
    except ConfigError as exc:
        if session.config_path is None:
            raise
        config_findings = [Finding.from_error(session.config_path, exc)]  # a broken config
        roots = []
    file_findings, count = check_files(list(paths) or roots, roots)
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
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List every plugin: version, built-in or not, hooks, and load errors.

    Exits 1 when a plugin failed to load, after listing them all.
    """
    from promptdock._manager import PluginHost

    records = PluginHost().plugins()
    if as_json:
        click.echo(_dumps([asdict(record) for record in records]))
    else:
        _print_plugins(records)
    if any(record.error for record in records):
        ctx.exit(FAILURE_EXIT)


def _print_plugins(records: Sequence[PluginRecord]) -> None:
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
