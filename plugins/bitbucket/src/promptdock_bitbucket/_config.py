"""The options of a ``bitbucket`` source: checked, normalised and turned into :class:`Settings`.

:func:`validate` is the ``SourceKind.validate`` of the kind: it receives the options exactly as
the user wrote them (``os.environ/NAME`` references included), and returns a plain dict with
every key present and every value of its final type. It is idempotent, so a source object can
call :func:`settings_from` on options that were already validated.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any, Literal
from urllib.parse import urlsplit

from promptdock import ConfigError, UnsafePromptIdError
from promptdock.ids import check_prompt_id

__all__ = [
    "CLOUD_BASE_URL",
    "DEFAULTS",
    "OPTION_KEYS",
    "Settings",
    "default_cache_dir",
    "settings_from",
    "validate",
]

CLOUD_BASE_URL = "https://api.bitbucket.org/2.0"
_ENV_PREFIX = "os.environ/"
_FULL_SHA = re.compile(r"[0-9a-f]{40}")

DEFAULTS: Mapping[str, Any] = {
    "api": "cloud",
    "workspace": None,
    "project_key": None,
    "repository": None,
    "access_token": None,
    "auth_method": "token",
    "username": None,
    "branch": None,
    "ref": None,
    "prompt_folder": "prompts",
    "base_url": None,
    "cache_ttl": 60.0,
    "cache_dir": None,
    "timeout": 10.0,
    "max_file_size": 1 << 20,
    "max_retries": 3,
    "retry_backoff": 0.5,
    "max_retry_wait": 30.0,
    "max_depth": 10,
}
"""Every option with its default (``None``: required, or computed from the others)."""

OPTION_KEYS = frozenset(DEFAULTS)


@dataclass(frozen=True)
class Settings:
    """A validated ``bitbucket`` source configuration (see the plugin README for each key).

    ``owner`` is the Cloud workspace or the Data Center project key. The token is kept out of
    ``repr``.
    """

    api: Literal["cloud", "datacenter"]
    owner: str
    repository: str
    access_token: str = field(repr=False)
    auth_method: Literal["token", "basic"]
    username: str | None
    branch: str | None
    ref: str | None
    prompt_folder: str
    base_url: str
    cache_ttl: float
    cache_dir: str | None
    timeout: float
    max_file_size: int
    max_retries: int
    retry_backoff: float
    max_retry_wait: float
    max_depth: int

    @property
    def location(self) -> str:
        """``workspace/repository`` (Cloud) or ``PROJECT/repository`` (Data Center)."""
        return f"{self.owner}/{self.repository}"

    @property
    def pinned_sha(self) -> str | None:
        """The commit when ``ref`` is a full SHA: nothing to resolve, nothing ever changes."""
        ref = self.ref
        return ref if ref is not None and _FULL_SHA.fullmatch(ref) else None

    def path_of(self, relative: str) -> str:
        """The repository path of ``relative`` (a path inside the prompt folder)."""
        return f"{self.prompt_folder}/{relative}" if self.prompt_folder else relative


def default_cache_dir() -> str:
    """Where snapshots go when ``cache_dir`` is not given: the user's cache folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "promptdock", "bitbucket")


def settings_from(options: Mapping[str, Any]) -> Settings:
    """Validate ``options`` (raw or already normalised) and build :class:`Settings`."""
    clean = validate(options)
    values = {k: v for k, v in clean.items() if k not in ("workspace", "project_key")}
    owner = clean["workspace"] if clean["api"] == "cloud" else clean["project_key"]
    return Settings(owner=owner, **values)


def validate(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise a ``bitbucket`` source's options.

    :returns: every key of :data:`DEFAULTS`, with ``os.environ/NAME`` references replaced by
        the variable's value and defaults filled in.
    :raises ConfigError: naming the offending key and saying how to fix it. The token's value
        never appears in the message.
    """
    unknown = sorted(set(options) - OPTION_KEYS)
    if unknown:
        close = get_close_matches(unknown[0], OPTION_KEYS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown option {unknown[0]!r} for a bitbucket source.{hint} Known options: "
            f"{', '.join(sorted(OPTION_KEYS))}",
            key=unknown[0],
        )
    raw = {key: _from_env(key, options.get(key)) for key in DEFAULTS}
    out: dict[str, Any] = {}
    api = _choice(raw, "api", ("cloud", "datacenter"))
    out["api"] = api
    if api == "cloud":
        if raw["project_key"] is not None:
            raise ConfigError(
                "'project_key' is a Bitbucket Data Center option; a Cloud source names its "
                "'workspace' (or set api: datacenter)",
                key="project_key",
            )
        out["workspace"] = _name(raw, "workspace", "the workspace slug, e.g. 'acme'")
        out["project_key"] = None
    else:
        if raw["workspace"] is not None:
            raise ConfigError(
                "a Bitbucket Data Center source names its project with 'project_key', not "
                "'workspace'",
                key="workspace",
            )
        out["workspace"] = None
        out["project_key"] = _name(raw, "project_key", "the project key, e.g. 'ACME'")
    out["repository"] = _name(raw, "repository", "the repository slug, e.g. 'prompts'")
    out["access_token"] = _token(raw.get("access_token"))
    out["auth_method"] = _choice(raw, "auth_method", ("token", "basic"))
    username = raw["username"]
    if out["auth_method"] == "basic":
        if not isinstance(username, str) or not username.strip():
            raise ConfigError(
                "auth_method 'basic' needs 'username': your Atlassian account email (Cloud API "
                "tokens) or your Data Center user name",
                key="username",
            )
        out["username"] = username.strip()
    elif username is not None and not isinstance(username, str):
        raise ConfigError("'username' must be a string", key="username")
    else:
        out["username"] = username
    out["branch"], out["ref"] = _refs(raw)
    out["prompt_folder"] = _folder(raw["prompt_folder"])
    out["base_url"] = _base_url(raw["base_url"], api)
    out["cache_ttl"] = _number(raw, "cache_ttl", low=0.0)
    out["cache_dir"] = _cache_dir(raw["cache_dir"], options)
    out["timeout"] = _number(raw, "timeout", low=0.001)
    out["max_file_size"] = int(_number(raw, "max_file_size", low=1, integer=True))
    out["max_retries"] = int(_number(raw, "max_retries", low=0, integer=True))
    out["retry_backoff"] = _number(raw, "retry_backoff", low=0.0)
    out["max_retry_wait"] = _number(raw, "max_retry_wait", low=0.0)
    out["max_depth"] = int(_number(raw, "max_depth", low=1, integer=True))
    return out


# -- one kind of value each ---------------------------------------------------------------


def _from_env(key: str, value: Any) -> Any:
    if not isinstance(value, str) or not value.startswith(_ENV_PREFIX):
        return value
    name = value[len(_ENV_PREFIX) :]
    if not name:
        raise ConfigError(
            f"option {key!r} is 'os.environ/' without a variable name; write 'os.environ/NAME'",
            key=key,
        )
    found = os.environ.get(name)
    if found is None:
        raise ConfigError(
            f"option {key!r} refers to the environment variable {name}, which is not set; "
            f"export {name} or put the value in the configuration",
            key=key,
        )
    return found


def _choice(raw: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> Any:
    value = raw[key]
    if value is None:
        return DEFAULTS[key]
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    raise ConfigError(
        f"option {key!r} is {value!r}; use one of: {', '.join(allowed)}",
        key=key,
    )


def _name(raw: Mapping[str, Any], key: str, what: str) -> str:
    value = raw[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConfigError(f"a bitbucket source needs {key!r}: {what}", key=key)
    if not isinstance(value, str):
        raise ConfigError(f"option {key!r} must be a string ({what})", key=key)
    value = value.strip()
    if "/" in value or any(ord(ch) < 32 for ch in value):
        hint = (
            " Put the workspace in 'workspace' and the repository slug in 'repository'."
            if "/" in value
            else ""
        )
        raise ConfigError(f"option {key!r} must be a single name, got {value!r}.{hint}", key=key)
    return value


def _token(value: Any) -> str:
    if value is None or value == "":
        raise ConfigError(
            "a bitbucket source needs 'access_token': a repository, project or workspace access "
            "token, or an API token with auth_method: basic. Keep it out of files with "
            "access_token: os.environ/BITBUCKET_TOKEN",
            key="access_token",
        )
    if not isinstance(value, str):
        raise ConfigError("option 'access_token' must be a string", key="access_token")
    # An HTTP library would quote the bad header value, token and all, in its own error.
    if value != value.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigError(
            "option 'access_token' contains whitespace or control characters (a pasted "
            "newline?); copy the token again",
            key="access_token",
        )
    return value


def _refs(raw: Mapping[str, Any]) -> tuple[str | None, str | None]:
    branch, ref = raw["branch"], raw["ref"]
    for key, value in (("branch", branch), ("ref", ref)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"option {key!r} must be a non-empty string", key=key)
    if branch is not None and ref is not None:
        raise ConfigError(
            "give either 'branch' (follow a branch) or 'ref' (a tag or commit SHA), not both",
            key="ref",
        )
    if isinstance(branch, str):
        branch = branch.strip().removeprefix("refs/heads/")
    if isinstance(ref, str):
        ref = ref.strip().removeprefix("refs/tags/")
    return branch, ref


def _folder(value: Any) -> str:
    if value is None:
        return str(DEFAULTS["prompt_folder"])
    if not isinstance(value, str):
        raise ConfigError(
            "option 'prompt_folder' must be a string ('' for the repository root)",
            key="prompt_folder",
        )
    folder = value.strip().strip("/")
    if folder:
        try:
            check_prompt_id(folder)
        except UnsafePromptIdError:
            raise ConfigError(
                f"option 'prompt_folder' is {value!r}: it must be a plain relative folder such "
                f"as 'prompts' or 'teams/support' ('' for the repository root)",
                key="prompt_folder",
            ) from None
    return folder


def _base_url(value: Any, api: str) -> str:
    if value is None or value == "":
        if api == "datacenter":
            raise ConfigError(
                "a Bitbucket Data Center source needs 'base_url', your server's REST root, e.g. "
                "https://bitbucket.example.com/rest/api/1.0",
                key="base_url",
            )
        return CLOUD_BASE_URL
    if not isinstance(value, str):
        raise ConfigError("option 'base_url' must be a URL string", key="base_url")
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"option 'base_url' is {value!r}; give an http(s) URL such as {CLOUD_BASE_URL}",
            key="base_url",
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(
            "option 'base_url' must not carry credentials, a query or a fragment; put the "
            "token in 'access_token'",
            key="base_url",
        )
    if api == "datacenter":
        if "/rest/api/" not in parts.path + "/":
            url += "/rest/api/1.0"
    elif not parts.path:
        raise ConfigError(
            f"option 'base_url' is {value!r}, which lacks the API version: Bitbucket Cloud's "
            f"API root ends in /2.0 (e.g. {CLOUD_BASE_URL})",
            key="base_url",
        )
    return url


def _number(raw: Mapping[str, Any], key: str, *, low: float, integer: bool = False) -> float:
    value = raw[key]
    if value is None:
        return float(DEFAULTS[key])
    number: float
    if isinstance(value, bool):
        number = float("nan")
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = float("nan")
    else:
        number = float("nan")
    if not number >= low or number == float("inf") or (integer and not number.is_integer()):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"option {key!r} is {value!r}; use {kind} >= {low:g}", key=key)
    return number


def _cache_dir(value: Any, options: Mapping[str, Any]) -> str | None:
    if value is False or value == "":
        return None  # persistence switched off explicitly
    if value is None:
        return None if "cache_dir" in options else default_cache_dir()
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(
            "option 'cache_dir' must be a folder path ('' or false: no snapshot on disk)",
            key="cache_dir",
        )
    return os.path.abspath(os.path.expanduser(os.fspath(value)))
