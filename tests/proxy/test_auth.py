"""Keys, teams and the listen-address rule for the publicly known ``sk-1234``."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptdock import ConfigError
from promptdock.config import TeamKey
from promptdock.proxy.auth import (
    MASTER,
    PUBLIC_KEY,
    KeyRing,
    Principal,
    check_listen_address,
    is_loopback,
)
from promptdock.proxy.errors import ApiError
from tests.proxy.conftest import ServeConfig, loaded

TEAM = TeamKey("sk-team-0123456789", "a", models=("support-*",), prompts=("support/*",))


def _ring() -> KeyRing:
    return KeyRing("sk-master-0123456789", [TEAM])


def test_master_key_as_bearer_or_x_api_key() -> None:
    ring = _ring()

    assert ring.authenticate(b"Bearer sk-master-0123456789", None) is MASTER
    assert ring.authenticate(b"bearer  sk-master-0123456789 ", None) is MASTER
    assert ring.authenticate(None, b"sk-master-0123456789") is MASTER


def test_team_key_finds_its_principal() -> None:
    principal = _ring().authenticate(b"Bearer sk-team-0123456789", None)

    assert principal == Principal("a", ("support-*",), ("support/*",))
    assert principal.label == "the key of team 'a'"


@pytest.mark.parametrize(
    ("authorization", "api_key", "message"),
    [
        (None, None, "no API key: send your promptdock key as 'Authorization: Bearer <key>'"),
        (b"Bearer sk-master-012345678", None, "invalid API key"),  # one character short
        (b"Bearer sk-master-01234567890", None, "invalid API key"),  # one too many
        (b"Token sk-master-0123456789", None, "the Authorization header must be 'Bearer <key>'"),
        (b"Bearer ", None, "the Authorization header must be 'Bearer <key>'"),
        (None, b"nope", "invalid API key"),
    ],
)
def test_bad_keys_are_401_without_echoing_them(
    authorization: bytes | None, api_key: bytes | None, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        _ring().authenticate(authorization, api_key)

    assert caught.value.status == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.message.startswith(message)
    assert "sk-master" not in caught.value.message


def test_without_keys_the_proxy_is_open() -> None:
    ring = KeyRing(None)

    assert ring.open
    assert ring.authenticate(None, None) is MASTER


def test_principal_globs_for_models_and_prompts() -> None:
    team = Principal("a", ("support-*", "triage"), ("support/*", "faq"))

    assert [team.may_use_model(m) for m in ("support-bot", "triage", "triage2", "x")] == [
        True,
        True,
        False,
        False,
    ]
    assert [team.may_use_prompt(p) for p in ("support/triage", "faq", "billing/x", "Faq")] == [
        True,
        True,
        False,
        False,  # case matters: prompt ids are paths
    ]
    # answers are remembered, and stay right
    assert team.may_use_prompt("support/triage") is True
    assert MASTER.may_use_model("anything")
    assert MASTER.may_use_prompt("any/thing")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("proxy.internal", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


PUBLIC_CONFIG = "general_settings:\n  master_key: sk-1234\n"


def test_public_key_on_loopback_is_a_loud_warning(tmp_path: Path) -> None:
    config = loaded(PUBLIC_CONFIG, tmp_path)

    warnings = check_listen_address(config, "127.0.0.1")

    assert warnings == [
        f"{config.path}: general_settings.master_key is {PUBLIC_KEY}, a publicly known key: "
        f"anyone who can reach this machine's loopback address can use the proxy. Fine for a "
        f"demo; set a real key before listening on any other address"
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "proxy.internal"])
def test_public_key_elsewhere_is_refused_saying_how_to_fix_it(tmp_path: Path, host: str) -> None:
    config = loaded(PUBLIC_CONFIG, tmp_path)

    with pytest.raises(ConfigError) as caught:
        check_listen_address(config, host)

    assert caught.value.key == "general_settings.master_key"
    message = str(caught.value)
    assert message.startswith(
        f"{config.path}:2: general_settings.master_key: sk-1234 is a publicly known key, so the "
        f"proxy will not listen on {host} with it (only on 127.0.0.1, ::1 or localhost). Set a "
        f"real key: "
    )
    assert "master_key: os.environ/PROMPTDOCK_MASTER_KEY" in message


def test_public_team_key_is_refused_too(tmp_path: Path) -> None:
    config = loaded(
        "general_settings: {master_key: sk-real-0123456789}\nkeys:\n  - key: sk-1234\n", tmp_path
    )

    with pytest.raises(ConfigError) as caught:
        check_listen_address(config, "0.0.0.0")

    assert caught.value.key == "keys[0].key"


def test_open_proxy_on_a_public_address_is_a_warning(tmp_path: Path) -> None:
    config = loaded("model_list: []\n", tmp_path)

    assert check_listen_address(config, "127.0.0.1") == []
    assert check_listen_address(config, "0.0.0.0") == [
        f"{config.path}: no general_settings.master_key and no keys: the proxy on 0.0.0.0 "
        f"answers anyone who can reach it; set master_key to require a key"
    ]


def test_public_key_app_refuses_a_public_host(tmp_path: Path, serve_config: ServeConfig) -> None:
    from promptdock.proxy.app import ProxyApp

    config = loaded(PUBLIC_CONFIG, tmp_path)

    with pytest.raises(ConfigError):
        ProxyApp(config, host="0.0.0.0")
    proxy = serve_config(PUBLIC_CONFIG)
    assert proxy.request("GET", "/v1/models", key=PUBLIC_KEY).status_code == 200
    assert proxy.request("GET", "/v1/models", key="sk-12345").status_code == 401
