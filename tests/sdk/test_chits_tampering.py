"""Tampered chits: blocks removed, reordered, spliced from another chit, bytes flipped, the proof or the authority
swapped, a chit replayed to another service or signed by another root key. Each is refused with 401
``invalid_token``, never a 5xx, and none is ever cached."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Security

from chit import InvalidTokenError, Principal, Verifier, attenuate
from chit.testing import RootKey, TestIssuer

pytestmark = pytest.mark.anyio
READ = "image-store:images:read"
DELETE = "image-store:images:delete"


# --- the Biscuit container, re-encoded by hand -----------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """(field number, wire type, raw value) of each top-level field."""
    out: list[tuple[int, int, bytes]] = []
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        if key & 7 == 0:
            start = i
            _, i = read_varint(data, i)
            out.append((key >> 3, 0, data[start:i]))
        else:
            length, i = read_varint(data, i)
            out.append((key >> 3, 2, data[i : i + length]))
            i += length
    return out


def encode(parts: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(
        varint(number << 3 | wire) + (value if wire == 0 else varint(len(value)) + value)
        for number, wire, value in parts
    )


def decode(token: str) -> list[tuple[int, int, bytes]]:
    return fields(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def token_of(parts: list[tuple[int, int, bytes]]) -> str:
    return base64.urlsafe_b64encode(encode(parts)).decode()


def blocks(parts: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    return [part for part in parts if part[0] == 3]


def without_blocks(parts: list[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    return [part for part in parts if part[0] != 3]


def with_blocks(parts: list[tuple[int, int, bytes]], new: list[tuple[int, int, bytes]]) -> str:
    head = [part for part in parts if part[0] in (1, 2)]
    tail = [part for part in parts if part[0] == 4]
    return token_of(head + new + tail)


# --- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture
def verifier(issuer: TestIssuer) -> Verifier:
    return issuer.verifier("image-store")


@pytest.fixture
async def chain(issuer: TestIssuer, verifier: Verifier) -> list[str]:
    """A chit and two successive attenuations of it (each verified: its root key is known here)."""
    root = issuer.chit("usr_alice", [READ, DELETE])
    await verifier.verify(root)
    one = attenuate(root, operations=[READ], now=issuer.clock())
    two = attenuate(one, resource="img-7", now=issuer.clock())
    return [root, one, two]


@pytest.fixture
async def http(verifier: Verifier) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()

    @app.get("/images/{image_id}")
    async def read_image(image_id: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
        principal.require(READ, resource=image_id)
        return {"id": image_id}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://image-store") as client:
        yield client


def tamperings(issuer: TestIssuer, chain: list[str]) -> dict[str, str]:
    root, _, two = chain
    parts = decode(two)
    appended = blocks(parts)
    other = attenuate(root, service="image-store", now=issuer.clock())  # a sibling of `one`
    other_parts = decode(other)
    bob = decode(issuer.chit("usr_bob", [READ, DELETE]))
    forged: dict[str, str] = {
        "last block removed (proof kept)": with_blocks(parts, appended[:1]),
        "first appended block removed": with_blocks(parts, appended[1:]),
        "every appended block removed": with_blocks(parts, []),
        "blocks reordered": with_blocks(parts, appended[::-1]),
        "block spliced from a sibling chit": with_blocks(parts, [blocks(other_parts)[0], appended[1]]),
        "sibling's block appended": with_blocks(parts, [*appended, blocks(other_parts)[0]]),
        "block duplicated": with_blocks(parts, [appended[0], *appended]),
        "proof of another chit": token_of([p for p in parts if p[0] != 4] + [p for p in other_parts if p[0] == 4]),
        "authority of another chit": token_of(
            [p for p in parts if p[0] == 1] + [p for p in bob if p[0] == 2] + [p for p in parts if p[0] in (3, 4)]
        ),
        "no proof": token_of([p for p in parts if p[0] != 4]),
        "truncated": two[: len(two) // 2],
        "standard base64 alphabet": two.replace("-", "+").replace("_", "/"),
        "another root key under the same id": issuer.chit("usr_alice", [READ], key=RootKey.generate(1)),
        "replayed to another service": issuer.chit("usr_alice", ["payment:charges:create"]),
        "another issuer": issuer.chit("usr_alice", [READ], issuer="https://evil.test"),
    }
    raw = bytearray(base64.urlsafe_b64decode(two + "=" * (-len(two) % 4)))
    for position in range(0, len(raw), max(1, len(raw) // 12)):
        flipped = bytearray(raw)
        flipped[position] ^= 0x10
        forged[f"bit flipped at byte {position}"] = base64.urlsafe_b64encode(bytes(flipped)).decode()
    return forged


async def test_the_untampered_chain_passes(chain: list[str], http: httpx.AsyncClient) -> None:
    for token in chain:
        response = await http.get("/images/img-7", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text


async def test_every_tampering_is_refused_401_and_never_cached(
    issuer: TestIssuer, chain: list[str], verifier: Verifier, http: httpx.AsyncClient
) -> None:
    forged = tamperings(issuer, chain)
    assert len(forged) > 20
    for name, token in forged.items():
        response = await http.get("/images/img-7", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert 'error="invalid_token"' in response.headers["www-authenticate"], name
        with pytest.raises(InvalidTokenError):
            await verifier.verify(token)
    assert verifier.cache is not None
    assert len(verifier.cache) == 1  # the chain's root, verified by the fixture


async def test_an_appended_block_cannot_be_stripped_to_widen(
    issuer: TestIssuer, chain: list[str], verifier: Verifier
) -> None:
    _, one, _ = chain
    parts = decode(one)
    for candidate in (with_blocks(parts, []), token_of(without_blocks(parts))):
        with pytest.raises(InvalidTokenError, match=r"signature is invalid|not a chit|does not decode"):
            await verifier.verify(candidate)
