"""The auth server's cache of its own access tokens presented back to it (subject and actor tokens of an
exchange, introspection): a token verified once is not verified again, but every hit still ends when
the token expires and when the key that signed it is retired; a token that differs by one character is
verified in full. Revocation is not the cache's: it is read on every request (tests of the grants).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from chit.core import jwt as chit_jwt
from chit.errors import InvalidTokenError
from chit.server.authserver import AuthServer
from chit.server.config import Settings
from chit.storage.engine import migrate, sqlite_url
from chit.storage.records import Client
from chit.testing import Clock

NOW = 1_750_000_000
TTL = 600


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[AuthServer, Clock, Client]]:
    clock = Clock(NOW)
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=sqlite_url(tmp_path),
        issuer="https://chit.test",
        access_token_ttl=TTL,
    )
    server = AuthServer(settings, clock=clock)
    try:
        migrate(server.store.engine)
        server.keystore.initialize("EdDSA", clock.datetime())
        client = server.store.create_client(
            "app", secret_hash=None, grant_types=["client_credentials"], scope=None, now=NOW
        )
        yield server, clock, client
    finally:
        server.store.engine.dispose()


def issue(server: AuthServer, client: Client) -> str:
    return server.issue_access_token(subject=client.id, client=client, permissions=()).token


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every signature the server checks, counted (the real check still runs)."""
    seen: list[bytes] = []
    real = chit_jwt.VerificationKey.verify

    def counted(self: chit_jwt.VerificationKey, signing_input: bytes, signature: bytes) -> bool:
        seen.append(signature)
        return real(self, signing_input, signature)

    monkeypatch.setattr(chit_jwt.VerificationKey, "verify", counted)
    return seen


def test_a_token_presented_again_is_not_verified_again(
    server: tuple[AuthServer, Clock, Client], verifications: list[bytes]
) -> None:
    auth, clock, client = server
    token = issue(auth, client)
    first = auth.decode_own_access_token(token)
    clock.advance(TTL - 1)
    assert auth.decode_own_access_token(token) == first
    assert len(verifications) == 1


def test_a_cached_token_expires_at_its_exp(server: tuple[AuthServer, Clock, Client]) -> None:
    auth, clock, client = server
    token = issue(auth, client)
    assert auth.decode_own_access_token(token).exp == NOW + TTL
    clock.set(NOW + TTL)
    with pytest.raises(InvalidTokenError, match="expired"):
        auth.decode_own_access_token(token)
    # inspection without the time checks still reads it, verified afresh
    assert auth.decode_own_access_token(token, verify_exp=False).exp == NOW + TTL


def test_a_cached_token_ends_with_its_retired_key(server: tuple[AuthServer, Clock, Client]) -> None:
    auth, clock, client = server
    token = issue(auth, client)
    auth.decode_own_access_token(token)
    clock.advance(1)
    auth.keystore.rotate("EdDSA", clock.datetime(), delay=timedelta(0), retire_previous=True)
    with pytest.raises(InvalidTokenError):
        auth.decode_own_access_token(token)
    fresh = issue(auth, client)
    assert auth.decode_own_access_token(fresh).sub == client.id


def test_a_token_differing_by_one_character_is_verified_in_full(
    server: tuple[AuthServer, Clock, Client], verifications: list[bytes]
) -> None:
    auth, _clock, client = server
    token = issue(auth, client)
    auth.decode_own_access_token(token)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:10]}{'A' if signature[10] != 'A' else 'B'}{signature[11:]}"
    with pytest.raises(InvalidTokenError, match="signature"):
        auth.decode_own_access_token(forged)
    assert len(verifications) == 2
    with pytest.raises(InvalidTokenError, match="signature"):  # a refused token is not remembered either
        auth.decode_own_access_token(forged)
    assert len(verifications) == 3


def test_another_issuer_is_never_answered_from_the_cache(server: tuple[AuthServer, Clock, Client]) -> None:
    auth, _clock, client = server
    token = issue(auth, client)
    auth.decode_own_access_token(token)
    with pytest.raises(InvalidTokenError, match="issuer"):
        auth.decode_own_access_token(token, issuer="https://other.test")
