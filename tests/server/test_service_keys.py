"""Service keys (DESIGN §4, "Chits on the wire"), over the CLI and a real server: registering a service
gives it an Ed25519 pair whose public half ``/.well-known/chit-service-keys`` publishes; the private
half waits in the data directory until ``chit service key`` hands it over, once; ``--rotate`` replaces
it; a service may supply its own public key instead; no private key reaches any other file.

One server for the module; every test registers services of its own (unique ids).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import biscuit_auth
import httpx
import pytest
from helpers import ADMIN_PASSWORD, Api, ChitServer, CliResult, ModuleServers, as_user, assert_error, audit_events
from sqlalchemy import update

from chit.storage import tables as t
from chit.storage.engine import create_database_engine, sqlite_url

SERVICE_KEYS = "/.well-known/chit-service-keys"


@pytest.fixture(scope="module")
def chit(module_server: ModuleServers) -> ChitServer:
    return module_server("service-keys")


@pytest.fixture(scope="module")
def admin(chit: ChitServer) -> Api:
    return as_user(chit, "admin", ADMIN_PASSWORD)


def manifest_text(service_id: str, extra: str = "") -> str:
    return f'id = "{service_id}"\ndescription = "{service_id} (test)"\n\n[permissions]\n"things:read" = "Read"\n{extra}'


def register(chit: ChitServer, directory: Path, service_id: str, *args: str, extra: str = "") -> dict[str, Any]:
    path = directory / f"{service_id}.toml"
    path.write_text(manifest_text(service_id, extra), encoding="utf-8")
    data: dict[str, Any] = chit.cli_ok("service", "register", str(path), *args, "--json").json()
    return data


def published(chit: ChitServer) -> dict[str, str]:
    response = httpx.get(chit.url + SERVICE_KEYS, timeout=30)
    assert response.status_code == 200, response.text
    keys = response.json()["keys"]
    return {k["service"]: k["public_key"] for k in keys}


def public_of(private_key: str) -> str:
    return str(biscuit_auth.KeyPair.from_private_key(biscuit_auth.PrivateKey(private_key)).public_key)


def key_file(chit: ChitServer, service_id: str) -> Path:
    return chit.data_dir / "service-keys" / f"{service_id}.key"


def hand_over(chit: ChitServer, service_id: str, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = chit.cli_ok("service", "key", service_id, *args, "--json").json()
    return data


def assert_refused(result: CliResult, *fragments: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def events_of(chit: ChitServer, event_type: str, service_id: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(chit, event_type) if e["detail"].get("service") == service_id]


def files_containing(chit: ChitServer, needle: bytes) -> list[Path]:
    """Every file of the installation (data directory and server log) that holds ``needle``."""
    assert chit.log_path is not None
    files = [p for p in chit.data_dir.rglob("*") if p.is_file()] + [chit.log_path]
    return sorted(p for p in files if needle in p.read_bytes())


def not_a_point() -> str:
    """64 hex digits of the right form that are no Ed25519 point: the library every verifier uses refuses them."""
    for i in range(1, 1000):
        candidate = f"ed25519/{i:064x}"
        try:
            biscuit_auth.PublicKey(candidate)
        except ValueError:
            return candidate
    raise AssertionError("every candidate parsed")


# registration creates a key; the endpoint publishes it ----------------------------------------------


def test_registering_creates_a_key_pair_whose_public_half_is_published(chit: ChitServer, tmp_path: Path) -> None:
    answer = register(chit, tmp_path, "keys-new")
    public_key = answer["public_key"]
    assert public_key.startswith("ed25519/")
    assert (answer["key_changed"], answer["private_key_waiting"]) == (True, True)
    assert str(biscuit_auth.PublicKey(public_key)) == public_key

    response = httpx.get(chit.url + SERVICE_KEYS, timeout=30)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert {"service": "keys-new", "public_key": public_key} in keys
    assert [k["service"] for k in keys] == sorted(k["service"] for k in keys)
    for entry in keys:
        assert set(entry) == {"service", "public_key"}
        assert str(biscuit_auth.PublicKey(entry["public_key"])) == entry["public_key"]

    listed = {s["id"]: s for s in chit.cli_ok("service", "list", "--json").json()["services"]}
    assert listed["keys-new"]["public_key"] == public_key
    assert public_key in chit.cli_ok("service", "list").stdout

    created = events_of(chit, "service.key_created", "keys-new")
    assert [(e["detail"]["public_key"], e["detail"]["source"]) for e in created] == [(public_key, "generated")]


def test_re_registering_keeps_the_key(chit: ChitServer, tmp_path: Path) -> None:
    first = register(chit, tmp_path, "keys-kept")["public_key"]
    again = register(chit, tmp_path, "keys-kept")
    assert (again["changed"], again["key_changed"], again["public_key"]) == (False, False, first)
    updated = register(chit, tmp_path, "keys-kept", extra='"things:write" = "Write"\n')
    assert (updated["changed"], updated["key_changed"], updated["public_key"]) == (True, False, first)
    assert published(chit)["keys-kept"] == first
    assert len(events_of(chit, "service.key_created", "keys-kept")) == 1


def test_the_human_answer_says_where_the_private_key_waits(chit: ChitServer, tmp_path: Path) -> None:
    path = tmp_path / "keys-human.toml"
    path.write_text(manifest_text("keys-human"), encoding="utf-8")
    out = chit.cli_ok("service", "register", str(path)).stdout
    assert f"public_key: {published(chit)['keys-human']}" in out
    assert "`chit service key keys-human` hands it over" in out
    handed = chit.cli_ok("service", "key", "keys-human").stdout.splitlines()
    assert handed[0] == f"public_key: {published(chit)['keys-human']}"
    assert handed[1].startswith("private_key: ed25519-private/")
    assert handed[2] == "(shown once)"


# handing over, once -------------------------------------------------------------------------------


def test_the_private_key_is_handed_over_once_and_matches_the_published_key(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-once")
    assert key_file(chit, "keys-once").exists()
    handed = hand_over(chit, "keys-once")
    assert handed["private_key"].startswith("ed25519-private/")
    assert public_of(handed["private_key"]) == handed["public_key"] == published(chit)["keys-once"]
    assert handed["rotated"] is False
    assert not key_file(chit, "keys-once").exists()

    line = assert_refused(chit.cli("service", "key", "keys-once"), "handed over already")
    assert "rotate with `chit service key keys-once --rotate`" in line
    assert published(chit)["keys-once"] == handed["public_key"]  # a refusal changes nothing
    handovers = events_of(chit, "service.key_handed_over", "keys-once")
    assert [e["detail"]["public_key"] for e in handovers] == [handed["public_key"]]
    refusals = [e for e in audit_events(chit, "admin.refused") if e["detail"].get("service_id") == "keys-once"]
    assert [e["detail"]["operation"] for e in refusals] == ["service.key_hand_over"]


def test_an_unknown_service_has_no_key_to_hand_over(chit: ChitServer) -> None:
    assert_refused(chit.cli("service", "key", "keys-nobody"), "no registered service 'keys-nobody'")
    assert_refused(chit.cli("service", "key", "keys-nobody", "--rotate"), "no registered service 'keys-nobody'")


def test_rotating_publishes_a_new_key_and_hands_its_private_half_over_at_once(chit: ChitServer, tmp_path: Path) -> None:
    old = register(chit, tmp_path, "keys-rotated")["public_key"]
    assert key_file(chit, "keys-rotated").exists()  # not handed over yet: rotating makes it useless
    rotated = hand_over(chit, "keys-rotated", "--rotate")
    assert rotated["rotated"] is True
    assert rotated["public_key"] != old
    assert public_of(rotated["private_key"]) == rotated["public_key"] == published(chit)["keys-rotated"]
    assert old not in published(chit).values()
    assert not key_file(chit, "keys-rotated").exists()
    assert_refused(chit.cli("service", "key", "keys-rotated"), "handed over already")

    events = events_of(chit, "service.key_rotated", "keys-rotated")
    assert [(e["detail"]["previous_public_key"], e["detail"]["public_key"]) for e in events] == [
        (old, rotated["public_key"])
    ]
    handovers = events_of(chit, "service.key_handed_over", "keys-rotated")
    assert [e["detail"]["public_key"] for e in handovers] == [rotated["public_key"]]
    again = register(chit, tmp_path, "keys-rotated")
    assert (again["public_key"], again["private_key_waiting"]) == (rotated["public_key"], False)


def key_events(chit: ChitServer) -> list[str]:
    """The values of the feed's ``key`` events, as ``chit revocations tail`` shows them."""
    lines = chit.cli_ok("revocations", "tail", "--json", "-n", "1000").stdout.splitlines()
    return [event["value"] for event in map(json.loads, lines) if event["kind"] == "key"]


def test_a_replaced_service_key_is_revoked_at_every_service(chit: ChitServer, admin: Api, tmp_path: Path) -> None:
    """Rotating (a key leaked) or supplying another one sends a ``key`` event naming the old public key: the
    services' verifiers ban it, and through() blocks it signed prove nothing any more."""
    old = register(chit, tmp_path, "keys-revoked")["public_key"]
    rotated = hand_over(chit, "keys-revoked", "--rotate")["public_key"]
    assert old in key_events(chit)
    supplied = str(biscuit_auth.KeyPair().public_key)
    body = {"manifest": manifest_text("keys-revoked"), "public_key": supplied}
    assert admin.put("/admin/services/keys-revoked", body).status_code == 200
    assert rotated in key_events(chit)
    assert supplied not in key_events(chit)  # the key in force now is not


# a key the service supplies -------------------------------------------------------------------------


def test_a_service_supplies_its_own_public_key(chit: ChitServer, tmp_path: Path) -> None:
    pair = biscuit_auth.KeyPair()
    own = str(pair.public_key)
    answer = register(chit, tmp_path, "keys-own", "--public-key", own)
    assert (answer["public_key"], answer["key_changed"], answer["private_key_waiting"]) == (own, True, False)
    assert published(chit)["keys-own"] == own
    assert not key_file(chit, "keys-own").exists()
    assert_refused(chit.cli("service", "key", "keys-own"), "handed over already")
    created = events_of(chit, "service.key_created", "keys-own")
    assert [(e["detail"]["public_key"], e["detail"]["source"]) for e in created] == [(own, "supplied")]

    assert register(chit, tmp_path, "keys-own")["public_key"] == own  # without --public-key: kept
    newer = str(biscuit_auth.KeyPair().public_key)
    replaced = register(chit, tmp_path, "keys-own", "--public-key", newer.upper().replace("ED25519/", "ed25519/"))
    assert (replaced["public_key"], replaced["key_changed"]) == (newer, True)
    assert published(chit)["keys-own"] == newer
    rotated = events_of(chit, "service.key_rotated", "keys-own")
    assert [(e["detail"]["previous_public_key"], e["detail"]["source"]) for e in rotated] == [(own, "supplied")]


def test_a_supplied_key_replaces_a_generated_one_still_waiting(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-swapped")
    assert key_file(chit, "keys-swapped").exists()
    own = str(biscuit_auth.KeyPair().public_key)
    assert register(chit, tmp_path, "keys-swapped", "--public-key", own)["private_key_waiting"] is False
    assert not key_file(chit, "keys-swapped").exists()
    assert published(chit)["keys-swapped"] == own


@pytest.mark.parametrize(
    "bad",
    [
        "ed25519/abc",
        "ed25519/" + "ab" * 33,
        "ab" * 32,
        "ed25519-private/" + "ab" * 32,
        "secp256r1/02" + "11" * 32,
        "ed25519/" + "zz" * 32,
        "ed25519/" + "ab" * 500,
        "NOT_A_POINT",
    ],
)
def test_a_bad_supplied_key_is_refused_and_nothing_is_written(chit: ChitServer, tmp_path: Path, bad: str) -> None:
    bad = not_a_point() if bad == "NOT_A_POINT" else bad
    before = chit.cli_ok("service", "list", "--json").stdout
    path = tmp_path / "keys-bad.toml"
    path.write_text(manifest_text("keys-bad"), encoding="utf-8")
    assert_refused(chit.cli("service", "register", str(path), "--public-key", bad), "ed25519/<64 hex digits>")
    assert chit.cli_ok("service", "list", "--json").stdout == before
    assert "keys-bad" not in published(chit)
    assert not list((chit.data_dir / "service-keys").glob("keys-bad*"))
    assert events_of(chit, "service.registered", "keys-bad") == []


def test_another_services_public_key_is_refused(chit: ChitServer, tmp_path: Path) -> None:
    taken = register(chit, tmp_path, "keys-first")["public_key"]
    path = tmp_path / "keys-copycat.toml"
    path.write_text(manifest_text("keys-copycat"), encoding="utf-8")
    assert_refused(chit.cli("service", "register", str(path), "--public-key", taken), "service 'keys-first'")
    assert "keys-copycat" not in [s["id"] for s in chit.cli_ok("service", "list", "--json").json()["services"]]
    assert published(chit)["keys-first"] == taken


# the admin API -------------------------------------------------------------------------------------


def test_the_admin_api_registers_with_a_supplied_key_or_a_new_pair(chit: ChitServer, admin: Api) -> None:
    own = str(biscuit_auth.KeyPair().public_key)
    r = admin.put("/admin/services/keys-api-own", {"manifest": manifest_text("keys-api-own"), "public_key": own})
    assert r.status_code == 200, r.text
    assert (r.json()["public_key"], r.json()["key_changed"], r.json()["private_key_waiting"]) == (own, True, False)

    r = admin.put("/admin/services/keys-api-new", {"manifest": manifest_text("keys-api-new")})
    assert r.status_code == 200, r.text
    generated = r.json()["public_key"]
    assert r.json()["private_key_waiting"] is True
    waiting = key_file(chit, "keys-api-new").read_text().strip()
    assert waiting.removeprefix("ed25519-private/") not in r.text  # the private half stays in the data directory
    assert public_of(hand_over(chit, "keys-api-new")["private_key"]) == generated

    services = {s["id"]: s for s in admin.get("/admin/services").json()["services"]}
    assert (services["keys-api-own"]["public_key"], services["keys-api-new"]["public_key"]) == (own, generated)
    assert {published(chit)[s] for s in ("keys-api-own", "keys-api-new")} == {own, generated}


def test_the_admin_api_refuses_a_bad_key_and_writes_nothing(chit: ChitServer, admin: Api) -> None:
    body = {"manifest": manifest_text("keys-api-bad"), "public_key": not_a_point()}
    assert_error(admin.put("/admin/services/keys-api-bad", body), 400, "invalid_request", "not a valid public key")
    assert "keys-api-bad" not in {s["id"] for s in admin.get("/admin/services").json()["services"]}
    assert not list((chit.data_dir / "service-keys").glob("keys-api-bad*"))


# files: owner only, and the private key in its own file only ------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_key_files_are_owner_only(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-modes")
    assert mode(chit.data_dir / "service-keys") == 0o700
    assert mode(key_file(chit, "keys-modes")) == 0o600


def test_the_private_key_is_in_no_other_file_and_never_in_the_audit_log(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-secret")
    waiting = key_file(chit, "keys-secret").read_text().strip()
    raw = biscuit_auth.PrivateKey(waiting).to_bytes()
    hex_part = waiting.removeprefix("ed25519-private/")
    assert files_containing(chit, hex_part.encode()) == [key_file(chit, "keys-secret")]
    assert files_containing(chit, raw) == []

    handed = hand_over(chit, "keys-secret")["private_key"]
    assert handed == waiting
    rotated = hand_over(chit, "keys-secret", "--rotate")["private_key"]
    everything = chit.cli_ok("audit", "tail", "--json", "-n", "10000").stdout
    for private in (waiting, rotated):
        hex_part = private.removeprefix("ed25519-private/")
        assert hex_part not in everything
        for needle in (hex_part.encode(), biscuit_auth.PrivateKey(private).to_bytes()):
            assert files_containing(chit, needle) == []


# removal ---------------------------------------------------------------------------------------------


def test_removing_a_service_forgets_its_keys(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-leaving")
    assert key_file(chit, "keys-leaving").exists()
    chit.cli_ok("service", "remove", "keys-leaving")
    assert "keys-leaving" not in published(chit)
    assert not key_file(chit, "keys-leaving").exists()
    again = register(chit, tmp_path, "keys-leaving")  # registered anew: a new pair
    assert again["private_key_waiting"] is True


# a service registered before service keys; a key file that matches nothing ---------------------------


def forget_key(chit: ChitServer, service_id: str) -> None:
    """As a service registered before migration 0005 is: no key, no file."""
    engine = create_database_engine(sqlite_url(chit.data_dir))
    try:
        with engine.begin() as conn:
            conn.execute(update(t.services).where(t.services.c.id == service_id).values(public_key=None))
    finally:
        engine.dispose()
    key_file(chit, service_id).unlink(missing_ok=True)


def test_a_service_without_a_key_gets_one_by_rotating_or_registering_again(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-older")
    register(chit, tmp_path, "keys-older-too")
    forget_key(chit, "keys-older")
    forget_key(chit, "keys-older-too")
    assert "keys-older" not in published(chit)
    assert_refused(chit.cli("service", "key", "keys-older"), "has no key yet", "`chit service key keys-older --rotate`")

    created = hand_over(chit, "keys-older", "--rotate")
    assert published(chit)["keys-older"] == created["public_key"] == public_of(created["private_key"])
    sources = [e["detail"]["source"] for e in events_of(chit, "service.key_created", "keys-older")]
    assert sources == ["generated", "generated"]  # the first registration's, then this one
    assert events_of(chit, "service.key_rotated", "keys-older") == []

    again = register(chit, tmp_path, "keys-older-too")
    assert (again["changed"], again["key_changed"], again["private_key_waiting"]) == (False, True, True)
    assert public_of(hand_over(chit, "keys-older-too")["private_key"]) == published(chit)["keys-older-too"]


def test_a_waiting_key_that_matches_nothing_is_refused_and_deleted(chit: ChitServer, tmp_path: Path) -> None:
    register(chit, tmp_path, "keys-stale")
    key_file(chit, "keys-stale").write_text(str(biscuit_auth.KeyPair().private_key))
    assert_refused(chit.cli("service", "key", "keys-stale"), "does not match its published key")
    assert not key_file(chit, "keys-stale").exists()
    assert events_of(chit, "service.key_handed_over", "keys-stale") == []


def test_a_private_key_given_as_the_public_one_is_refused_and_never_kept(chit: ChitServer, tmp_path: Path) -> None:
    mistake = str(biscuit_auth.KeyPair().private_key)
    path = tmp_path / "keys-mistake.toml"
    path.write_text(manifest_text("keys-mistake"), encoding="utf-8")
    result = chit.cli("service", "register", str(path), "--public-key", mistake)
    line = assert_refused(result, "ed25519/<64 hex digits>")
    hex_part = mistake.removeprefix("ed25519-private/")
    assert hex_part not in line + result.stdout
    refusals = [e for e in audit_events(chit, "admin.refused") if e["detail"].get("operation") == "service.register"]
    assert refusals
    assert all("public_key" not in e["detail"] for e in refusals)
    assert files_containing(chit, hex_part.encode()) == []
