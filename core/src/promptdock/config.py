"""Read a LiteLLM proxy ``config.yaml`` unchanged: deployments, prompt sources, the master key.

What promptdock understands::

    model_list:                       # -> ProxyConfig.deployments
      - model_name: my-dotprompt-model
        litellm_params:
          model: dotprompt/gpt-4      # "<source>/<upstream model>"
          prompt_id: "hello"
          prompt_version: 2           # optional
          api_key: os.environ/OPENAI_API_KEY
          api_base: http://127.0.0.1:8000/v1
          temperature: 0.2            # and any other OpenAI request parameter
    litellm_settings:
      global_prompt_directory: ./prompts   # -> filesystem source "dotprompt"
      global_bitbucket_config: {...}       # -> bitbucket source "bitbucket" (options as given)
      request_timeout: 600                 # seconds to wait for an upstream (default 600)
    general_settings:
      master_key: sk-1234
      max_request_size_mb: 1               # larger request bodies get HTTP 413
      bitbucket_webhook_secret: os.environ/BITBUCKET_WEBHOOK_SECRET
    sources:                          # promptdock extension: more named sources
      team-a: {kind: bitbucket, workspace: acme, repository: prompts}
    keys:                             # promptdock extension: team keys -> ProxyConfig.team_keys
      - key: os.environ/TEAM_A_KEY
        team: a
        models: [triage, "support-*"]     # model_name globs (default: every model)
        prompts: ["support/*"]            # prompt id globs (default: every prompt)

Relative folder paths (``global_prompt_directory``, and ``path`` of ``filesystem`` sources)
are resolved against the folder holding the config file, not the working directory, so a
config means the same thing wherever the proxy is started from.

A string value ``os.environ/NAME`` anywhere is replaced by the environment variable ``NAME``.
Keys promptdock does not use are listed in :attr:`ProxyConfig.unused_keys` — LiteLLM configs
carry many settings for features promptdock does not have, and they must not stop it.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from promptdock.errors import ConfigError
from promptdock.models import SourceConfig, redacted
from promptdock.prompt_file import KNOWN_PARAMS

if TYPE_CHECKING:
    from promptdock._dock import PromptDock

__all__ = [
    "ENV_PREFIX",
    "FILESYSTEM_KINDS",
    "REQUEST_PARAMS",
    "Deployment",
    "ProxyConfig",
    "TeamKey",
    "UnresolvedEnv",
    "load_config",
    "missing_env",
    "unresolved_env",
]

MAX_DEPTH = 64
"""How deeply a config may nest mappings and lists."""
MAX_VALUES = 50_000
"""How many values a config may hold once YAML aliases are expanded."""

ENV_PREFIX = "os.environ/"
"""A string value starting with this names an environment variable (LiteLLM's convention)."""

REQUEST_PARAMS = KNOWN_PARAMS | {
    # OpenAI request parameters a prompt file has no use for (``metadata`` there is promptdock's)
    "metadata",
    "stream_options",
    # connection settings that PromptDock.completion() takes as keywords
    "extra_headers",
    "max_retries",
    "timeout",
}
"""``litellm_params`` keys passed on as request parameters; other unknown keys are unused.

The parameters a prompt's frontmatter may set (:data:`promptdock.prompt_file.KNOWN_PARAMS`),
plus the request and connection settings only a caller sets."""

_DEPLOYMENT_FIELDS = frozenset({"model", "prompt_id", "prompt_version", "api_key", "api_base"})
_KNOWN_TOP = ("model_list", "litellm_settings", "general_settings", "sources", "keys")
_KNOWN_GENERAL = ("master_key", "max_request_size_mb", "bitbucket_webhook_secret")
_KNOWN_KEY_FIELDS = ("key", "team", "models", "prompts")
_GLOB_CHARS = frozenset("*?[")
FILESYSTEM_KINDS = frozenset({"filesystem", "dotprompt"})
"""Source kinds whose ``path`` option is a folder (resolved against the config's folder)."""


class UnresolvedEnv(str):
    """The placeholder left for an unset ``os.environ/NAME`` when ``resolve_env=False``.

    It is the original ``"os.environ/NAME"`` string, so it types as ``str``; :attr:`var` is the
    variable and :attr:`key` the key path it was found at.
    """

    __slots__ = ("key", "var")

    var: str
    key: str

    def __new__(cls, var: str, key: str) -> UnresolvedEnv:
        """Build the placeholder for variable ``var`` found at key path ``key``."""
        self = super().__new__(cls, ENV_PREFIX + var)
        self.var = var
        self.key = key
        return self


def unresolved_env(value: Any) -> list[UnresolvedEnv]:
    """Every :class:`UnresolvedEnv` placeholder inside ``value`` (nested mappings and lists)."""
    found: list[UnresolvedEnv] = []
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, UnresolvedEnv):
            found.append(item)
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return sorted(found, key=lambda ref: ref.key)


@dataclass(frozen=True)
class Deployment:
    """One ``model_list`` entry: a model name clients ask for, mapped to a prompt and upstream.

    :ivar model_name: what clients send as ``model`` (``"my-dotprompt-model"``).
    :ivar model: ``litellm_params.model``, ``"<source>/<upstream>"`` for prompt deployments.
    :ivar prompt_id: the prompt to render, or ``None`` for a plain pass-through model.
    :ivar prompt_version: ``N`` for ``<prompt_id>.vN.prompt``.
    :ivar api_key: the upstream key (hidden from ``repr``).
    :ivar api_base: the upstream OpenAI-style base URL.
    :ivar params: the other request parameters (``temperature``, ``max_tokens``, ...).
    :ivar key: the entry's key path (``"model_list[0]"``), for messages.
    """

    model_name: str
    model: str
    prompt_id: str | None = None
    prompt_version: int | None = None
    api_key: str | None = None
    api_base: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def __repr__(self) -> str:
        return (
            f"Deployment(model_name={self.model_name!r}, model={self.model!r}, "
            f"prompt_id={self.prompt_id!r}, prompt_version={self.prompt_version!r}, "
            f"api_key={'***' if self.api_key else None!r}, api_base={self.api_base!r}, "
            f"params={redacted(self.params)!r})"
        )

    @property
    def source(self) -> str | None:
        """The source prefix of :attr:`model` (``"dotprompt"``), ``None`` without a ``/``."""
        prefix, slash, _ = self.model.partition("/")
        return prefix if slash else None


@dataclass(frozen=True)
class TeamKey:
    """One ``keys:`` entry: an API key of a team, limited to some models and prompts.

    :ivar key: the key clients send as ``Authorization: Bearer <key>`` (hidden from ``repr``).
    :ivar team: the team's name, for messages and the access log.
    :ivar models: ``model_name`` globs (``fnmatch``) the key may call; ``None`` for every model.
    :ivar prompts: prompt id globs (``"support/*"``) the key may use; ``None`` for every prompt.
    :ivar path: the entry's key path (``"keys[0]"``), for messages.
    """

    key: str = field(repr=False)
    team: str
    models: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    path: str = ""


@dataclass(frozen=True)
class ProxyConfig:
    """A loaded ``config.yaml``. Build it with :func:`load_config`.

    :ivar path: the config file, as given.
    :ivar deployments: the ``model_list`` entries, in file order.
    :ivar master_key: ``general_settings.master_key`` (hidden from ``repr``).
    :ivar unused_keys: key paths promptdock ignores (``"router_settings"``,
        ``"model_list[0].model_info"``); worth one warning, never an error.
    :ivar unresolved_env: ``(key path, variable)`` of every unset ``os.environ/`` reference
        (only when loaded with ``resolve_env=False``).
    :ivar key_lines: 1-based line of each key path in the file.
    :ivar team_keys: the ``keys:`` entries (promptdock's extension), in file order.
    :ivar webhook_secret: ``general_settings.bitbucket_webhook_secret``, the secret Bitbucket
        signs push webhooks with (hidden from ``repr``).
    :ivar request_timeout: ``litellm_settings.request_timeout``: seconds to wait for an
        upstream when a deployment sets no ``timeout``.
    :ivar max_request_size_mb: ``general_settings.max_request_size_mb``: the largest request
        body the proxy accepts, in MiB.
    """

    path: str
    deployments: tuple[Deployment, ...] = ()
    source_configs: Mapping[str, SourceConfig] = field(default_factory=dict)
    master_key: str | None = field(default=None, repr=False)
    unused_keys: tuple[str, ...] = ()
    unresolved_env: tuple[tuple[str, str], ...] = ()
    key_lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)
    team_keys: tuple[TeamKey, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    request_timeout: float | None = None
    max_request_size_mb: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_configs", MappingProxyType(dict(self.source_configs)))
        object.__setattr__(self, "key_lines", MappingProxyType(dict(self.key_lines)))

    def sources(self) -> dict[str, SourceConfig]:
        """The named prompt sources: ``dotprompt``, ``bitbucket`` and those under ``sources:``."""
        return dict(self.source_configs)

    def make_dock(self, **kwargs: Any) -> PromptDock:
        """A :class:`~promptdock.PromptDock` over :meth:`sources`, built with ``kwargs``."""
        from promptdock._dock import PromptDock

        return PromptDock(sources=self.sources(), **kwargs)

    def line_of(self, key: str) -> int | None:
        """The line of key path ``key``, else of its closest enclosing key that has one."""
        return _line_in(self.key_lines, key)

    def deployments_named(self, model_name: str) -> tuple[Deployment, ...]:
        """The deployments clients reach with ``model=model_name`` (several: load balancing)."""
        return self.deployment_index.get(model_name, ())

    @cached_property
    def deployment_index(self) -> Mapping[str, tuple[Deployment, ...]]:
        """Every ``model_name`` mapped to its deployments in file order, built once."""
        index: dict[str, list[Deployment]] = {}
        for deployment in self.deployments:
            index.setdefault(deployment.model_name, []).append(deployment)
        return MappingProxyType({name: tuple(found) for name, found in index.items()})

    @property
    def model_names(self) -> tuple[str, ...]:
        """The distinct ``model_name`` values, in file order."""
        return tuple(self.deployment_index)

    def unused_keys_warning(self) -> str | None:
        """A one-line warning listing :attr:`unused_keys`, or ``None`` when there are none."""
        if not self.unused_keys:
            return None
        return (
            f"{self.path}: promptdock ignores these keys: {', '.join(self.unused_keys)} "
            f"(LiteLLM settings it does not implement; harmless)"
        )


def _line_in(lines: Mapping[str, int], key: str) -> int | None:
    while key:
        line = lines.get(key)
        if line is not None:
            return line
        cut = max(key.rfind("."), key.rfind("["))
        key = key[:cut] if cut > 0 else ""
    return None


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Reader:
    """One pass over the YAML tree: plain Python values, key lines, ``os.environ/`` lookups."""

    def __init__(self, display: str, resolve_env: bool) -> None:
        self.display = display
        self.resolve_env = resolve_env
        self.lines: dict[str, int] = {}
        self.unresolved: list[tuple[str, str]] = []
        self.unused: list[str] = []
        self.values = 0

    def fail(self, key: str, problem: str) -> ConfigError:
        line = self.line_of(key)
        where = f"{self.display}:{line}" if line is not None else self.display
        return ConfigError(f"{where}: {key}: {problem}", key=key)

    def line_of(self, key: str) -> int | None:
        return _line_in(self.lines, key)

    # -- tree -> plain values ------------------------------------------------------------

    def plain(self, node: Any, path: str, depth: int = 0) -> Any:
        from ruamel.yaml.comments import CommentedMap, CommentedSeq
        from ruamel.yaml.scalarbool import ScalarBoolean

        self.values += 1
        if self.values > MAX_VALUES:
            # Aliases are shared in the tree but copied here: refuse exponential expansion.
            raise self.fail(
                path or "(root)",
                f"the config holds more than {MAX_VALUES:,} values once YAML aliases are "
                f"expanded (an alias bomb?); write it out without nested aliases",
            )
        if depth > MAX_DEPTH and isinstance(node, CommentedMap | CommentedSeq):
            raise self.fail(
                path or "(root)",
                f"nested more than {MAX_DEPTH} levels deep; flatten the structure",
            )
        if isinstance(node, CommentedMap):
            out: dict[str, Any] = {}
            for key, value in node.items():
                key_path = _join(path, key)
                # A key merged in with "<<" has no line of its own; it uses its mapping's.
                with contextlib.suppress(KeyError, TypeError):
                    self.lines[key_path] = node.lc.key(key)[0] + 1
                out[str(key)] = self.plain(value, key_path, depth + 1)
            return out
        if isinstance(node, CommentedSeq):
            items = []
            for index, value in enumerate(node):
                item_path = f"{path}[{index}]"
                with contextlib.suppress(KeyError, TypeError):
                    self.lines[item_path] = node.lc.item(index)[0] + 1
                items.append(self.plain(value, item_path, depth + 1))
            return items
        if isinstance(node, bool | ScalarBoolean):
            return bool(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            return self.env(str(node), path) if node.startswith(ENV_PREFIX) else str(node)
        return node

    def env(self, value: str, key: str) -> str:
        var = value[len(ENV_PREFIX) :]
        if not var:
            raise self.fail(key, f"'{ENV_PREFIX}' names no variable: write {ENV_PREFIX}NAME")
        resolved = os.environ.get(var)
        if resolved is not None:
            return resolved
        if self.resolve_env:
            raise self.fail(
                key,
                f"environment variable {var} is not set. Export it before starting promptdock, "
                f"or write the value in the config",
            )
        self.unresolved.append((key, var))
        return UnresolvedEnv(var, key)

    # -- typed access --------------------------------------------------------------------

    def mapping(self, value: Any, key: str, what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping of {what}, got {_kind(value)}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value:
            got = "nothing" if value is None else _kind(value)
            raise self.fail(key, f"must be a non-empty string, got {got}")
        return value

    def optional_string(self, value: Any, key: str) -> str | None:
        return None if value is None else self.string(value, key)

    def unused_under(self, mapping: Mapping[str, Any], path: str, known: tuple[str, ...]) -> None:
        self.unused.extend(_join(path, key) for key in mapping if key not in known)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def _read_yaml(display: str, text: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError

    # Round-trip mode keeps each key's line for error messages; values are converted to plain
    # Python types right after, so nothing downstream sees ruamel's types.
    from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning, YAMLError

    yaml = YAML(typ="rt")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ReusedAnchorWarning)
            return yaml.load(text)
    except ReusedAnchorWarning as exc:
        found = re.search(r"duplicate anchor '([^']*)'", str(exc))
        name = f" &{found.group(1)}" if found else ""
        raise ConfigError(
            f"{display}: invalid YAML: the anchor{name} is defined twice; give each anchor "
            f"its own name"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"{display}: invalid YAML: nested too deeply to read; flatten the structure"
        ) from None
    except DuplicateKeyError as exc:
        # The library's message quotes both values, which may be secrets: name the key only.
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        found = re.match(r'found duplicate key "(.*?)"', str(exc.problem))
        key = found.group(1) if found else "?"
        raise ConfigError(
            f"{display}{line}: duplicate key {key!r}: a key may appear once per mapping; "
            f"remove or rename one of them"
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(
            f"{display}{line}: invalid YAML: {exc.problem}{context}. Fix the syntax at that line "
            f"(indentation, quotes, a missing ':' or bracket)"
        ) from None
    except YAMLError as exc:
        raise ConfigError(f"{display}: invalid YAML: {exc}") from None


def load_config(path: str | os.PathLike[str], *, resolve_env: bool = True) -> ProxyConfig:
    """Load a LiteLLM-style proxy ``config.yaml``.

    :param path: the config file.
    :param resolve_env: replace ``os.environ/NAME`` values now, failing on unset variables.
        With ``False``, unset variables become :class:`UnresolvedEnv` placeholders and are
        listed in :attr:`ProxyConfig.unresolved_env`, so all of them can be reported at once.
    :raises ConfigError: unreadable file, invalid YAML, a key of the wrong type or an unset
        variable; the message starts with ``<file>:<line>:`` and ``key`` is the key path.
    """
    display = os.fspath(path)
    try:
        with open(display, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {display} not found: pass the path of your config.yaml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {display}: {exc}") from None
    reader = _Reader(display, resolve_env)
    root = reader.plain(_read_yaml(display, text), "")
    if root is None:
        root = {}
    if not isinstance(root, dict):
        raise ConfigError(
            f"{display}:1: the config must be a mapping with keys such as model_list and "
            f"litellm_settings, got {_kind(root)}"
        )
    reader.unused_under(root, "", _KNOWN_TOP)
    base_dir = os.path.dirname(os.path.abspath(display))
    deployments = _deployments(reader, root.get("model_list"))
    sources = _sources(reader, root, base_dir)
    general = reader.mapping(root.get("general_settings"), "general_settings", "settings")
    reader.unused_under(general, "general_settings", _KNOWN_GENERAL)
    master_key = reader.optional_string(general.get("master_key"), "general_settings.master_key")
    settings = reader.mapping(root.get("litellm_settings"), "litellm_settings", "settings")
    team_keys = _team_keys(reader, root.get("keys"), master_key, deployments)
    webhook_secret = reader.optional_string(
        general.get("bitbucket_webhook_secret"), "general_settings.bitbucket_webhook_secret"
    )
    request_timeout = _positive(
        reader, settings.get("request_timeout"), "litellm_settings.request_timeout"
    )
    max_request_size_mb = _positive(
        reader, general.get("max_request_size_mb"), "general_settings.max_request_size_mb"
    )
    return ProxyConfig(
        path=display,
        deployments=deployments,
        source_configs=sources,
        master_key=master_key,
        unused_keys=tuple(reader.unused),
        unresolved_env=tuple(reader.unresolved),
        key_lines=reader.lines,
        team_keys=team_keys,
        webhook_secret=webhook_secret,
        request_timeout=request_timeout,
        max_request_size_mb=max_request_size_mb,
    )


def missing_env(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(key path, variable)`` for every ``os.environ/`` reference in ``path`` that is unset.

    :raises ConfigError: the file cannot be read or parsed.
    """
    return list(load_config(path, resolve_env=False).unresolved_env)


def _deployments(reader: _Reader, model_list: Any) -> tuple[Deployment, ...]:
    if model_list is None:
        return ()
    if not isinstance(model_list, list):
        raise reader.fail("model_list", f"must be a list of deployments, got {_kind(model_list)}")
    return tuple(
        _deployment(reader, entry, f"model_list[{i}]") for i, entry in enumerate(model_list)
    )


def _deployment(reader: _Reader, entry: Any, key: str) -> Deployment:
    if not isinstance(entry, dict):
        raise reader.fail(
            key,
            f"each model_list entry must be a mapping with model_name and litellm_params, "
            f"got {_kind(entry)}",
        )
    reader.unused_under(entry, key, ("model_name", "litellm_params"))
    model_name = reader.string(entry.get("model_name"), f"{key}.model_name")
    params_key = f"{key}.litellm_params"
    if entry.get("litellm_params") is None:
        raise reader.fail(params_key, "is missing: add litellm_params with at least 'model'")
    litellm = reader.mapping(entry["litellm_params"], params_key, "parameters")
    model = reader.string(litellm.get("model"), f"{params_key}.model")
    params: dict[str, Any] = {}
    for name, value in litellm.items():
        if name in REQUEST_PARAMS:
            params[name] = value
        elif name not in _DEPLOYMENT_FIELDS:
            reader.unused.append(f"{params_key}.{name}")
    return Deployment(
        model_name=model_name,
        model=model,
        prompt_id=reader.optional_string(litellm.get("prompt_id"), f"{params_key}.prompt_id"),
        prompt_version=_version(
            reader, litellm.get("prompt_version"), f"{params_key}.prompt_version"
        ),
        api_key=reader.optional_string(litellm.get("api_key"), f"{params_key}.api_key"),
        api_base=reader.optional_string(litellm.get("api_base"), f"{params_key}.api_base"),
        params=params,
        key=key,
    )


def _positive(reader: _Reader, value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise reader.fail(key, f"must be a positive number, got {_kind(value)}")
    return float(value)


def _team_keys(
    reader: _Reader, entries: Any, master_key: str | None, deployments: tuple[Deployment, ...]
) -> tuple[TeamKey, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise reader.fail(
            "keys",
            f"must be a list of {{key: ..., team: ..., models: [...]}}, got {_kind(entries)}",
        )
    names = {d.model_name for d in deployments}
    seen: dict[str, str] = {} if master_key is None else {master_key: "general_settings.master_key"}
    found: list[TeamKey] = []
    for index, entry in enumerate(entries):
        path = f"keys[{index}]"
        entry = reader.mapping(entry, path, "key, team, models and prompts")
        reader.unused_under(entry, path, _KNOWN_KEY_FIELDS)
        key = reader.string(entry.get("key"), f"{path}.key")
        if key in seen:
            # Never the key itself in the message: name where the two copies are.
            raise reader.fail(
                f"{path}.key",
                f"is the same key as {seen[key]}: give every team its own key",
            )
        seen[key] = f"{path}.key"
        team = reader.optional_string(entry.get("team"), f"{path}.team") or path
        models = _globs(reader, entry.get("models"), f"{path}.models", "model")
        for position, model in enumerate(models or ()):
            if _GLOB_CHARS.isdisjoint(model) and model not in names:
                known = ", ".join(sorted(names)) or "none"
                raise reader.fail(
                    f"{path}.models[{position}]",
                    f"no model_list entry is named {model!r} (model_name values: {known}); "
                    f"fix the name or use a glob such as 'support-*'",
                )
        prompts = _globs(reader, entry.get("prompts"), f"{path}.prompts", "prompt id")
        found.append(TeamKey(key, team, models, prompts, path))
    return tuple(found)


def _globs(reader: _Reader, value: Any, key: str, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise reader.fail(key, f"must be a list of {what} names or globs, got {_kind(value)}")
    if not value:
        raise reader.fail(
            key, f"is empty: list at least one {what}, or leave the key out to allow every {what}"
        )
    return tuple(reader.string(item, f"{key}[{i}]") for i, item in enumerate(value))


def _version(reader: _Reader, value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise reader.fail(key, "must be a version number N (for <prompt_id>.vN.prompt)")
    return value


def _sources(reader: _Reader, root: Mapping[str, Any], base_dir: str) -> dict[str, SourceConfig]:
    settings = reader.mapping(root.get("litellm_settings"), "litellm_settings", "settings")
    known = ("global_prompt_directory", "global_bitbucket_config", "request_timeout")
    reader.unused_under(settings, "litellm_settings", known)
    sources: dict[str, SourceConfig] = {}
    origin: dict[str, str] = {}
    directory = reader.optional_string(
        settings.get("global_prompt_directory"), "litellm_settings.global_prompt_directory"
    )
    if directory is not None:
        sources["dotprompt"] = SourceConfig(
            "dotprompt", "filesystem", {"path": _folder(directory, base_dir)}
        )
        origin["dotprompt"] = "litellm_settings.global_prompt_directory"
    bitbucket_key = "litellm_settings.global_bitbucket_config"
    if settings.get("global_bitbucket_config") is not None:
        options = reader.mapping(settings["global_bitbucket_config"], bitbucket_key, "options")
        sources["bitbucket"] = SourceConfig("bitbucket", "bitbucket", options)
        origin["bitbucket"] = bitbucket_key
    extra = reader.mapping(root.get("sources"), "sources", "source names to {kind: ..., ...}")
    for name, spec in extra.items():
        key = f"sources.{name}"
        if name in sources:
            raise reader.fail(
                key,
                f"source {name!r} is also defined by {origin[name]} (line "
                f"{reader.line_of(origin[name])}): rename one of them",
            )
        options = dict(reader.mapping(spec, key, "options with a 'kind'"))
        kind = reader.string(options.pop("kind", None), f"{key}.kind")
        if kind in FILESYSTEM_KINDS and isinstance(options.get("path"), str):
            options["path"] = _folder(options["path"], base_dir)
        sources[name] = SourceConfig(name, kind, options)
    return sources


def _folder(path: str, base_dir: str) -> str:
    if isinstance(path, UnresolvedEnv):
        return path  # reported through unresolved_env; joining would hide the marker
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded):
        return expanded
    return os.path.normpath(os.path.join(base_dir, expanded))
