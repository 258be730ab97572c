"""Who may call the proxy: the master key, team keys, and where the proxy may listen.

Clients send ``Authorization: Bearer <key>`` (or ``x-api-key: <key>``). A key is found by the
SHA-256 of what was sent and then confirmed with :func:`hmac.compare_digest`, so the time an
answer takes does not reveal how much of a key was right, and finding it costs the same with
one key or a hundred.

A proxy with neither a master key nor team keys is open: everyone is the master. The seed's
``sk-1234`` is published in LiteLLM's documentation, so it is accepted only while the proxy
listens on a loopback address (:func:`check_listen_address`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from promptdock.config import ProxyConfig, TeamKey
from promptdock.errors import ConfigError
from promptdock.proxy.errors import ApiError

__all__ = [
    "MASTER",
    "PUBLIC_KEY",
    "KeyRing",
    "Principal",
    "check_listen_address",
    "is_loopback",
]

PUBLIC_KEY = "sk-1234"
"""The master key of LiteLLM's examples (and the seed's config): known to everyone."""

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_MAX_CACHE = 1024


@dataclass(frozen=True)
class Principal:
    """Whoever a request's key belongs to, and what it may reach.

    :ivar team: the team of a team key; ``None`` for the master key (or an open proxy).
    :ivar models: ``model_name`` globs it may call; ``None`` for every model.
    :ivar prompts: prompt id globs it may use; ``None`` for every prompt.
    """

    team: str | None = None
    models: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None
    _seen_models: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    _seen_prompts: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    @property
    def label(self) -> str:
        """``"the master key"`` or ``"the key of team 'a'"``, for messages."""
        return "the master key" if self.team is None else f"the key of team {self.team!r}"

    def may_use_model(self, model_name: str) -> bool:
        """Whether this key may call ``model_name`` (a ``model_list`` name)."""
        return self._allowed(self.models, model_name, self._seen_models)

    def may_use_prompt(self, prompt_id: str) -> bool:
        """Whether this key may use the prompt ``prompt_id``."""
        return self._allowed(self.prompts, prompt_id, self._seen_prompts)

    @staticmethod
    def _allowed(globs: tuple[str, ...] | None, name: str, seen: dict[str, bool]) -> bool:
        if globs is None:
            return True
        # Names repeat from request to request: remember answers instead of matching again.
        answer = seen.get(name)
        if answer is None:
            answer = any(fnmatchcase(name, glob) for glob in globs)
            if len(seen) < _MAX_CACHE:
                seen[name] = answer
        return answer


MASTER = Principal()
"""The master key's principal: everything is allowed."""


class KeyRing:
    """The keys a proxy accepts, from ``general_settings.master_key`` and ``keys:``.

    :param master_key: the master key, or ``None``.
    :param team_keys: the team keys.
    """

    def __init__(self, master_key: str | None, team_keys: Sequence[TeamKey] = ()) -> None:
        self._keys: dict[bytes, tuple[bytes, Principal]] = {}
        if master_key:
            self._add(master_key, MASTER)
        for team_key in team_keys:
            self._add(team_key.key, Principal(team_key.team, team_key.models, team_key.prompts))
        self.open = not self._keys

    @classmethod
    def from_config(cls, config: ProxyConfig) -> KeyRing:
        """The key ring of a loaded config."""
        return cls(config.master_key, config.team_keys)

    def _add(self, key: str, principal: Principal) -> None:
        raw = key.encode()
        self._keys[hashlib.sha256(raw).digest()] = (raw, principal)

    def authenticate(self, authorization: bytes | None, api_key: bytes | None) -> Principal:
        """The principal of a request's ``Authorization`` and ``x-api-key`` header values.

        :raises ApiError: 401 when no key was sent, the header is malformed or the key is
            unknown (the message never repeats the key).
        """
        if self.open:
            return MASTER
        if authorization is not None:
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                raise ApiError(
                    401,
                    "the Authorization header must be 'Bearer <key>'; send your promptdock key "
                    "as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                    code="invalid_api_key",
                )
            token = token.strip()
        elif api_key is not None:
            token = api_key.strip()
        else:
            raise ApiError(
                401,
                "no API key: send your promptdock key as 'Authorization: Bearer <key>' or "
                "'x-api-key: <key>' (the master_key of the proxy's config, or a team key)",
                code="missing_api_key",
            )
        found = self._keys.get(hashlib.sha256(token).digest())
        if found is None or not hmac.compare_digest(found[0], token):
            raise ApiError(
                401,
                "invalid API key: it is neither the proxy's master_key nor one of its team "
                "keys; check the key you send",
                code="invalid_api_key",
            )
        return found[1]


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the proxy reachable from this machine only."""
    name = host.strip("[]").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def check_listen_address(config: ProxyConfig, host: str) -> list[str]:
    """Refuse to serve a publicly known key beyond this machine; warn about weak setups.

    :returns: warnings to show once at start-up (``sk-1234`` on a loopback address, or no key
        at all on a public one).
    :raises ConfigError: ``sk-1234`` is the master key (or a team key) and ``host`` is not a
        loopback address; the message says how to set a real key.
    """
    public = [
        where
        for key, where in [
            (config.master_key, "general_settings.master_key"),
            *[(t.key, f"{t.path}.key") for t in config.team_keys],
        ]
        if key == PUBLIC_KEY
    ]
    if public and not is_loopback(host):
        key = public[0]
        line = config.line_of(key)
        where = f"{config.path}:{line}" if line is not None else config.path
        raise ConfigError(
            f"{where}: {key}: {PUBLIC_KEY} is a publicly known key, so the proxy will not listen "
            f"on {host} with it (only on 127.0.0.1, ::1 or localhost). Set a real key: generate "
            f"one with  python -c \"import secrets; print('sk-' + secrets.token_urlsafe(32))\"  "
            f"export it as PROMPTDOCK_MASTER_KEY and write  master_key: "
            f"os.environ/PROMPTDOCK_MASTER_KEY  in general_settings",
            key=key,
        )
    warnings = [
        f"{config.path}: {where} is {PUBLIC_KEY}, a publicly known key: anyone who can reach "
        f"this machine's loopback address can use the proxy. Fine for a demo; set a real key "
        f"before listening on any other address"
        for where in public
    ]
    if not config.master_key and not config.team_keys and not is_loopback(host):
        warnings.append(
            f"{config.path}: no general_settings.master_key and no keys: the proxy on {host} "
            f"answers anyone who can reach it; set master_key to require a key"
        )
    return warnings
