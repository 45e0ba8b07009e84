"""``chit token inspect`` / ``attenuate`` / ``verify`` on chits, through the real ``chit`` executable on an
installation made by ``chit init``; the chits are minted with that installation's root key, as the auth
server mints them (``chit.core.biscuit.mint_chit``). Exit codes: 0 ok (allowed), 1 refused with one line on
stderr, 2 usage."""

from __future__ import annotations

import json
import time
from pathlib import Path

import biscuit_auth
import pytest
from helpers import run_chit

from chit.cli.common import open_server
from chit.core import biscuit

RIGHTS = ["cart:carts:read", "email:messages:send", "payment:charges:create"]


class Installation:
    def __init__(self, data_dir: Path) -> None:
        self.where = ["--data-dir", str(data_dir)]
        with open_server(data_dir, None) as server:
            key = server.keys().minting_root_key
            self.private_key, self.key_id, self.public_key = key.private_key, key.id, key.public_key
            self.issuer = server.settings.issuer

    def mint(self, *, ttl: int = 600, key_id: int | None = None, rights: list[str] = RIGHTS) -> str:
        return biscuit.mint_chit(
            self.private_key,
            self.key_id if key_id is None else key_id,
            issuer=self.issuer,
            subject="usr_alice",
            client_id="web",
            permissions=rights,
            actors=[("cart", "cart")],
            expires_at=int(time.time()) + ttl,
        )

    def chit(self, *args: str) -> tuple[int, str, str]:
        done = run_chit("token", *args, *self.where)
        return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Installation:
    data_dir = tmp_path_factory.mktemp("token-cli") / "data"
    assert run_chit("init", "--data-dir", str(data_dir)).returncode == 0
    return Installation(data_dir)


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chit: ")
    return lines[0]


def test_attenuate_then_verify_for_the_next_hop(inst: Installation) -> None:
    token = inst.mint()
    code, out, err = inst.chit(
        "attenuate", token, "--operation", "payment:charges:create", "--operation", "email:messages:send", "--ttl", "60"
    )
    assert code == 0, err
    narrowed = out.strip()
    assert narrowed != token

    code, out, err = inst.chit("verify", narrowed, "--service", "payment", "--operation", "payment:charges:create")
    assert (code, err) == (0, "")
    assert out.startswith("allowed: usr_alice for payment")

    # the original could read carts; the narrowed one no longer can, and says which check refused it
    assert inst.chit("verify", token, "--service", "cart", "--operation", "cart:carts:read")[0] == 0
    code, out, err = inst.chit("verify", narrowed, "--service", "cart", "--operation", "cart:carts:read", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["decision"] == "refused"
    assert data["reason"].startswith("chit check failed: check all operation($op)")
    assert "(block 1)" in data["reason"]
    assert one_line(err) == f"chit: refused: {data['reason']}"


def test_attenuate_json_and_request_binding(inst: Installation) -> None:
    code, out, err = inst.chit(
        "attenuate", inst.mint(), "--service", "email", "--method", "post", "--path", "/messages/*", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["blocks"] == 2
    assert len(data["revocation_ids"]) == 2
    narrowed = data["token"]
    ok = ("verify", narrowed, "--service", "email", "--operation", "email:messages:send")
    assert inst.chit(*ok, "--method", "POST", "--path", "/messages/7")[0] == 0
    code, out, _ = inst.chit(*ok, "--method", "GET", "--path", "/messages/7")
    assert code == 1
    assert 'check if method("POST")' in out
    code, out, _ = inst.chit(*ok, "--method", "POST", "--path", "/drafts/7")
    assert code == 1
    assert "starts_with" in out
    # the service restriction: payment is refused even for an operation the chit holds
    assert inst.chit("verify", narrowed, "--service", "payment", "--operation", "payment:charges:create")[0] == 1


def test_resource_and_owner_checks(inst: Installation) -> None:
    narrowed = inst.chit("attenuate", inst.mint(), "--resource", "cart-7")[1].strip()
    base = ("verify", narrowed, "--service", "cart", "--operation", "cart:carts:read")
    assert inst.chit(*base, "--resource", "cart-7", "--owner", "usr_alice")[0] == 0
    code, out, _ = inst.chit(*base, "--resource", "cart-8")
    assert code == 1
    assert 'check if resource("cart-7")' in out
    assert inst.chit(*base)[0] == 1  # a decision that names no resource

    owned = inst.chit("attenuate", inst.mint(), "--datalog", 'check if owner("usr_alice");')[1].strip()
    assert inst.chit("verify", owned, "--service", "cart", "--owner", "usr_alice")[0] == 0
    assert inst.chit("verify", owned, "--service", "cart", "--owner", "usr_bob")[0] == 1


def test_verify_says_why_a_chit_is_invalid(inst: Installation) -> None:
    token = inst.mint()
    cases = {
        "expired": (inst.mint(ttl=-10), "invalid chit: token has expired"),
        "forged": (token[:200] + ("A" if token[200] != "A" else "B") + token[201:], "invalid chit: chit signature"),
        "other service": (token, "invalid chit: token is not meant for this audience"),
        "unknown root key": (inst.mint(key_id=99), "invalid chit: token is signed by an unknown root key"),
    }
    for name, (chit, reason) in cases.items():
        service = "tagging" if name == "other service" else "cart"
        code, out, err = inst.chit("verify", chit, "--service", service)
        assert code == 1, name
        assert out.startswith(f"refused: {reason}"), (name, out)
        assert one_line(err).startswith(f"chit: refused: {reason}"), name

    code, _, err = inst.chit("verify", "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "--service", "cart")
    assert code == 1
    assert one_line(err) == "chit: not a chit (a Biscuit token in base64url)"
    assert inst.chit("verify", token)[0] == 2  # --service is required


def test_attenuate_refusals_are_one_line(inst: Installation) -> None:
    token = inst.mint()
    cases = {
        "nothing": ((), "nothing to restrict"),
        "not a chit": (("--ttl", "60"), "not a chit"),
        "unknown key": (("--ttl", "60"), "the chit names root key 99, which this installation does not hold"),
        "bad ttl": (("--ttl", "0"), "ttl must be a positive number of seconds"),
        "bad datalog": (("--datalog", "check if ((("), "datalog does not parse"),
        "a rule": (("--datalog", 'right("x") <- subject("usr_alice");'), "the attenuated chit would be refused"),
    }
    for name, (options, reason) in cases.items():
        subject = {"not a chit": "abc.def.ghi", "unknown key": inst.mint(key_id=99)}.get(name, token)
        code, out, err = inst.chit("attenuate", subject, *options)
        assert code == 1, (name, out, err)
        assert out == ""
        assert reason in one_line(err), (name, err)
    assert inst.chit("attenuate", token, "--ttl", "soon")[0] == 2


def test_inspect_shows_blocks_checks_signers_and_revocation_ids(inst: Installation) -> None:
    narrowed = inst.chit("attenuate", inst.mint(), "--service", "payment", "--ttl", "30")[1].strip()
    # a third-party block, as a service proves the path: signed by the service's own key
    root = biscuit_auth.PublicKey(inst.public_key)
    parsed = biscuit_auth.Biscuit.from_base64(narrowed, root)
    service_key = biscuit_auth.KeyPair()
    block = parsed.third_party_request().create_block(
        service_key.private_key, biscuit_auth.BlockBuilder('handled_by("cart");')
    )
    proven = parsed.append_third_party(service_key.public_key, block).to_base64()

    code, out, err = inst.chit("inspect", proven, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["kind"] == "chit"
    assert data["signature"] == "valid"
    assert data["root_key_id"] == inst.key_id
    assert len(data["revocation_ids"]) == 3
    assert all(len(r) == 128 for r in data["revocation_ids"])
    kinds = [b["kind"] for b in data["blocks"]]
    assert kinds == ["authority", "attenuation", "third-party"]
    authority, attenuation, third = data["blocks"]
    assert authority["signer"] is None
    assert attenuation["signer"] is None
    assert third["signer"] == str(service_key.public_key)
    assert 'subject("usr_alice");' in authority["source"]
    assert 'actor(0, "cart", "cart");' in authority["source"]
    assert [c.startswith("check if time($t)") for c in authority["checks"]] == [True]
    assert 'check if service("payment")' in attenuation["checks"]
    assert len(attenuation["checks"]) == 2
    assert third["checks"] == []
    assert 'handled_by("cart");' in third["source"]
    assert [b["revocation_id"] for b in data["blocks"]] == data["revocation_ids"]

    code, out, _ = inst.chit("inspect", proven)
    assert code == 0
    assert out.startswith(f"chit signed by root key {inst.key_id}; signature: valid")
    assert f"block 2 (third-party, signed by {service_key.public_key}):" in out
    assert f"revocation id: {data['revocation_ids'][1]}" in out


def test_inspect_refuses_a_chit_of_another_installation(inst: Installation) -> None:
    stranger = biscuit.mint_chit(
        biscuit.generate_root_private_key(),
        inst.key_id,
        issuer=inst.issuer,
        subject="usr_mallory",
        client_id="web",
        permissions=RIGHTS,
        actors=[],
        expires_at=int(time.time()) + 600,
    )
    code, out, err = inst.chit("inspect", stranger)
    assert code == 1
    assert out == ""
    assert one_line(err) == "chit: not a JWT, and not a chit signed by this server's root keys"
    code, out, _ = inst.chit("verify", stranger, "--service", "cart")
    assert code == 1
    assert out.startswith("refused: invalid chit: chit signature is invalid")
