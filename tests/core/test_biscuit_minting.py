"""``chit.core.biscuit``: a chit's authority block states exactly DESIGN §4's vocabulary, every value goes in as
a parameter (no datalog injection from any id), the root key id names the key, and reading a chit picks the
key by that id. Decisions are read through ``biscuit_auth``'s authorizer, never from the printed source."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import biscuit_auth
import pytest

from chit.core import biscuit
from chit.errors import ConfigurationError, InvalidTokenError

EXP = 1_900_000_000  # 2030-03-17T17:46:40Z
ISSUER = "http://127.0.0.1:8700"


@pytest.fixture(scope="module")
def root() -> str:
    return biscuit.generate_root_private_key()


def mint(root: str, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "subject": "usr_alice",
        "client_id": "image-store",
        "permissions": ["tagging:tags:write", "image-store:images:read"],
        "actors": [("cli_image", "image-store"), ("cli_cart", "cart")],
        "expires_at": EXP,
    }
    return biscuit.mint_chit(root, 7, **{**values, **overrides})


def verified(token: str, root: str) -> Any:
    return biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(biscuit.root_public_key(root)))


def facts(token: str, root: str, name: str, arity: int) -> list[list[Any]]:
    """The ``name`` facts a verifier's authorizer sees, as term lists."""
    authorizer = biscuit_auth.AuthorizerBuilder("allow if true;").build(verified(token, root))
    variables = ", ".join(f"$v{i}" for i in range(arity))
    found = authorizer.query(biscuit_auth.Rule(f"found({variables}) <- {name}({variables})"))
    return sorted(fact.terms for fact in found)


def test_the_authority_block_is_exactly_the_vocabulary(root: str) -> None:
    token = mint(root)
    assert verified(token, root).block_count() == 1
    assert verified(token, root).block_source(0) == (
        f'issuer("{ISSUER}");\n'
        'subject("usr_alice");\n'
        'client("image-store");\n'
        'right("image-store:images:read");\n'
        'right("tagging:tags:write");\n'
        'actor(0, "cli_image", "image-store");\n'
        'actor(1, "cli_cart", "cart");\n'
        "check if time($t), $t <= 2030-03-17T17:46:40Z;\n"
    )


def test_a_chit_of_a_session_states_it_and_reads_it_back(root: str) -> None:
    token = mint(root, session_id="key_0123")
    assert (
        verified(token, root)
        .block_source(0)
        .endswith('session("key_0123");\ncheck if time($t), $t <= 2030-03-17T17:46:40Z;\n')
    )
    assert facts(token, root, "session", 1) == [["key_0123"]]
    read = biscuit.read_chit(token, {7: biscuit.root_public_key(root)})
    assert read.session_id == "key_0123"
    assert biscuit.read_chit(mint(root), {7: biscuit.root_public_key(root)}).session_id is None
    assert "session(" not in verified(mint(root), root).block_source(0)


def test_reading_takes_the_earliest_expiry_of_any_block(root: str) -> None:
    token = mint(root)
    sooner = biscuit_auth.BlockBuilder("check if time($t), $t <= 2030-01-01T00:00:00Z;")
    attenuated = verified(token, root).append(sooner)
    read = biscuit.read_chit(attenuated.to_base64(), {7: biscuit.root_public_key(root)})
    assert read.expires_at == EXP  # the authority block's: what a revocation of the chit must outlast
    assert read.valid_until == int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
    assert biscuit.read_chit(token, {7: biscuit.root_public_key(root)}).valid_until == EXP


def test_a_chit_stating_two_sessions_does_not_read(root: str) -> None:
    builder = biscuit_auth.BiscuitBuilder(
        'issuer({i}); subject("usr_a"); client("c"); right("a:b:c"); session("rtf_1"); session("rtf_2");'
        " check if time($t), $t <= {exp};",
        {"i": ISSUER, "exp": datetime.fromtimestamp(EXP, UTC)},
    )
    builder.set_root_key_id(7)
    token = builder.build(biscuit_auth.PrivateKey(root)).to_base64()
    with pytest.raises(InvalidTokenError):
        biscuit.read_chit(token, {7: biscuit.root_public_key(root)})


def test_a_chit_without_actors_has_no_actor_fact(root: str) -> None:
    token = mint(root, actors=[])
    assert "actor(" not in verified(token, root).block_source(0)
    assert facts(token, root, "actor", 3) == []


def test_wildcard_permissions_are_never_put_in_a_chit(root: str) -> None:
    token = mint(root, permissions=["image-store:images:*", "chit:*:*", "tagging:*:read", "tagging:tags:read"])
    assert facts(token, root, "right", 1) == [["tagging:tags:read"]]


def test_the_expiry_check_holds_until_the_expiry_and_fails_after(root: str) -> None:
    token = mint(root)
    for now, allowed in [(EXP - 1, True), (EXP, True), (EXP + 1, False)]:
        builder = biscuit_auth.AuthorizerBuilder(
            "time({now}); allow if true;", {"now": datetime.fromtimestamp(now, UTC)}
        )
        authorizer = builder.build(verified(token, root))
        if allowed:
            assert authorizer.authorize() == 0
        else:
            with pytest.raises(biscuit_auth.AuthorizationError, match="check if time"):
                authorizer.authorize()


HOSTILE = [
    'x"); right("chit:users:write',
    'x") ; right("a:b:c"); check if false; //',
    'x"), right("evil")\nright("evil',
    "{r0}",
    "$t",
    '\\"',
    "",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_no_value_can_inject_datalog(root: str, hostile: str) -> None:
    token = mint(
        root,
        issuer=hostile,
        subject=hostile,
        client_id=hostile,
        permissions=["tagging:tags:read"],
        actors=[(hostile, hostile)],
    )
    # each hostile string is one term of the fact it was put in, and adds no fact, rule or check
    assert facts(token, root, "subject", 1) == [[hostile]]
    assert facts(token, root, "client", 1) == [[hostile]]
    assert facts(token, root, "issuer", 1) == [[hostile]]
    assert facts(token, root, "actor", 3) == [[0, hostile, hostile]]
    assert facts(token, root, "right", 1) == [["tagging:tags:read"]]
    authorizer = biscuit_auth.AuthorizerBuilder(
        "time({now}); allow if true;", {"now": datetime.fromtimestamp(EXP, UTC)}
    ).build(verified(token, root))
    assert authorizer.authorize() == 0  # no injected `check if false`


def test_the_token_is_base64url_with_padding_and_names_its_root_key_id(root: str) -> None:
    token = mint(root)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    assert len(token) % 4 == 0  # the binding's to_base64() pads with '='; kept exactly
    base64.urlsafe_b64decode(token)
    assert biscuit.root_key_id(token) == 7
    assert biscuit_auth.UnverifiedBiscuit.from_base64(token.rstrip("=")).root_key_id() == 7


def test_mint_answers_the_revocation_id_of_the_authority_block(root: str) -> None:
    minted = biscuit.mint(
        root, 3, issuer=ISSUER, subject="usr_a", client_id="c", permissions=[], actors=[], expires_at=EXP
    )
    assert minted.revocation_ids == tuple(verified(minted.token, root).revocation_ids)
    assert len(minted.revocation_id) == 128
    assert minted.revocation_id == minted.revocation_ids[0]


def test_parse_chit_picks_the_key_its_root_key_id_names(root: str) -> None:
    other = biscuit.generate_root_private_key()
    token = mint(root)  # root key id 7
    keys = {7: biscuit.root_public_key(root), 8: biscuit.root_public_key(other)}
    assert biscuit.parse_chit(token, keys).block_count() == 1
    with pytest.raises(InvalidTokenError):
        biscuit.parse_chit(token, {8: keys[8]})  # no key with id 7
    with pytest.raises(InvalidTokenError):
        biscuit.parse_chit(token, {7: keys[8]})  # id 7 names another key
    with pytest.raises(InvalidTokenError):
        biscuit.parse_chit("not a chit", keys)
    with pytest.raises(InvalidTokenError):
        biscuit.parse_chit("eyJhbGciOiJSUzI1NiJ9.e30.sig", keys)


def test_describe_reads_a_chit_by_key_id_or_by_trying_each_key(root: str) -> None:
    other = biscuit.generate_root_private_key()
    token = mint(root)
    public = biscuit.root_public_key(root)
    by_id = biscuit.describe(token, {7: public})
    assert by_id is not None
    assert by_id[0].startswith(f'issuer("{ISSUER}");')
    assert biscuit.describe(token, [biscuit.root_public_key(other), public]) == by_id
    assert biscuit.describe(token, {1: public}) is None  # the chit names id 7
    assert biscuit.describe(token, [biscuit.root_public_key(other)]) is None
    assert biscuit.describe("garbage", {7: public}) is None


def test_a_corrupt_root_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        biscuit.root_public_key("ed25519-private/not-hex")
