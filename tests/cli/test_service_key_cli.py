"""``chit service key SERVICE_ID [--rotate] [--json]`` and ``chit service register --public-key``
through the real ``chit`` executable on an installation made by ``chit init``: exit codes, the
one-line refusals, help that shows no Python type, and the private key on stdout only."""

from __future__ import annotations

import json
from pathlib import Path

import biscuit_auth
import pytest
from helpers import run_chit

MANIFEST = 'id = "cli-keyed"\n[permissions]\n"things:read" = "Read"\n'


@pytest.fixture
def installation(tmp_path: Path) -> list[str]:
    where = ["--data-dir", str(tmp_path / "data")]
    assert run_chit("init", *where).returncode == 0
    (tmp_path / "cli-keyed.toml").write_text(MANIFEST, encoding="utf-8")
    return where


def test_register_then_hand_over_once_with_exit_codes(installation: list[str], tmp_path: Path) -> None:
    registered = run_chit("service", "register", str(tmp_path / "cli-keyed.toml"), *installation)
    assert registered.returncode == 0, registered.stderr
    assert "`chit service key cli-keyed` hands it over" in registered.stdout

    handed = run_chit("service", "key", "cli-keyed", "--json", *installation)
    assert handed.returncode == 0, handed.stderr
    data = json.loads(handed.stdout)
    assert set(data) == {"service", "public_key", "private_key", "rotated"}
    derived = biscuit_auth.KeyPair.from_private_key(biscuit_auth.PrivateKey(data["private_key"])).public_key
    assert str(derived) == data["public_key"]
    assert data["private_key"] not in handed.stderr

    again = run_chit("service", "key", "cli-keyed", *installation)
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr.splitlines() == [
        "chit: the private key of service 'cli-keyed' was handed over already (or the service supplied its own);"
        " rotate with `chit service key cli-keyed --rotate`"
    ]
    rotated = run_chit("service", "key", "cli-keyed", "--rotate", *installation)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.splitlines()[1].startswith("private_key: ed25519-private/")


def test_a_bad_public_key_exits_1_and_a_missing_service_id_2(installation: list[str], tmp_path: Path) -> None:
    bad = run_chit("service", "register", str(tmp_path / "cli-keyed.toml"), "--public-key", "ed25519/00", *installation)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "chit: not a valid public key: a service's public key is Ed25519, written ed25519/<64 hex digits>"
    ]
    listed = run_chit("service", "list", "--json", *installation)
    assert json.loads(listed.stdout)["services"] == []
    assert run_chit("service", "key", *installation).returncode == 2


def test_help_names_the_options_without_python_types() -> None:
    out = run_chit("service", "key", "--help").stdout
    assert "Usage: chit service key [OPTIONS] SERVICE_ID" in out
    assert "--rotate" in out
    register = run_chit("service", "register", "--help").stdout
    assert "--public-key" in register
    assert "ed25519/HEX" in register
    for type_name in ("<bool>", "<str>", "TEXT", "BOOLEAN"):
        assert type_name not in out + register
