"""Chits (Biscuit v3 tokens) on the auth server: root keys, minting, reading. The only module that imports
``biscuit_auth`` on the server side.

A chit's authority block states, in the vocabulary of DESIGN §4 ("Chits on the wire")::

    issuer("<iss>");
    subject("<sub>");
    client("<client_id>");
    right("<service:resource:action>");        one per permission; never one with a '*' segment
    actor(<n>, "<sub>", "<client_id>");        one per actor of the delegation chain, 0 = the current one
    check if time($t), $t <= <expiry, UTC>;

Every value goes in as a ``{parameter}`` of the binding, never by formatting datalog text, so that no
id can inject datalog. Careful: the binding *prints* a string term without escaping its quotes
(``block_source`` shows ``subject("a"); right("b")`` for the one term ``a"); right("b``), so the
printed source is for people; decisions read facts through an authorizer.

The token is the binding's ``to_base64()`` exactly: URL-safe base64 *with* ``=`` padding (every Biscuit
library also reads it unpadded). Its root key id names the root key that signed it, so that a verifier
picks the published key by id (discovery's ``biscuit_root_keys``) instead of trying each.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import biscuit_auth

from chit.errors import ConfigurationError, InvalidTokenError

WILDCARD = "*"
_CHIT_ERRORS = (
    biscuit_auth.BiscuitValidationError,
    biscuit_auth.BiscuitBlockError,
    biscuit_auth.BiscuitSerializationError,
    ValueError,
    TypeError,
)  # the binding's errors share no base class


@dataclass(frozen=True, slots=True)
class MintedChit:
    token: str  # base64url with '=' padding, as ``to_base64()`` gives it
    revocation_ids: tuple[str, ...]  # one per block; the authority block's first (128 hex characters)

    @property
    def revocation_id(self) -> str:
        """The authority block's revocation id: revoking it revokes the chit and all attenuated from it."""
        return self.revocation_ids[0]


def generate_root_private_key() -> str:
    """A new Ed25519 root key in biscuit's text form ``ed25519-private/<hex>`` (a secret)."""
    return str(biscuit_auth.KeyPair().private_key)


@functools.lru_cache(maxsize=16)
def _private_key(private_text: str) -> Any:
    try:
        return biscuit_auth.PrivateKey(private_text.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("the biscuit root key file is corrupt") from exc


def root_public_key(private_text: str) -> str:
    """The public half, ``ed25519/<hex>``, as published in ``biscuit_public_keys``."""
    return str(biscuit_auth.KeyPair.from_private_key(_private_key(private_text)).public_key)


def is_concrete(permission: str) -> bool:
    """Whether a permission names no ``*`` segment: only those go into a chit."""
    return WILDCARD not in permission.split(":")


def mint(
    private_key_text: str,
    root_key_id: int,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    permissions: Iterable[str],
    actors: Sequence[tuple[str, str]],
    expires_at: int,
) -> MintedChit:
    """A chit signed by the root key ``root_key_id``: its authority block states exactly the vocabulary above.
    ``actors`` is the delegation chain as ``(sub, client_id)``, current actor first; ``expires_at`` epoch seconds."""
    lines = ["issuer({iss});", "subject({sub});", "client({client});"]
    values: dict[str, Any] = {"iss": issuer, "sub": subject, "client": client_id}
    for index, permission in enumerate(sorted({p for p in permissions if is_concrete(p)})):
        lines.append(f"right({{r{index}}});")
        values[f"r{index}"] = permission
    for index, (actor_subject, actor_client) in enumerate(actors):
        lines.append(f"actor({{n{index}}}, {{as{index}}}, {{ac{index}}});")
        values.update({f"n{index}": index, f"as{index}": actor_subject, f"ac{index}": actor_client})
    lines.append("check if time($t), $t <= {exp};")
    values["exp"] = datetime.fromtimestamp(expires_at, UTC)
    builder = biscuit_auth.BiscuitBuilder("\n".join(lines), values)
    builder.set_root_key_id(root_key_id)
    token = builder.build(_private_key(private_key_text))
    return MintedChit(token.to_base64(), tuple(token.revocation_ids))


def mint_chit(
    private_key_text: str,
    root_key_id: int,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    permissions: Iterable[str],
    actors: Sequence[tuple[str, str]],
    expires_at: int,
) -> str:
    """The token of ``mint``: base64url with ``=`` padding."""
    return mint(
        private_key_text,
        root_key_id,
        issuer=issuer,
        subject=subject,
        client_id=client_id,
        permissions=permissions,
        actors=actors,
        expires_at=expires_at,
    ).token


def root_key_id(token: str) -> int | None:
    """The root key id a chit names (unverified), or None when it names none or is no chit."""
    try:
        found = biscuit_auth.UnverifiedBiscuit.from_base64(token).root_key_id()
    except _CHIT_ERRORS:
        return None
    return found if isinstance(found, int) else None


def parse_chit(token: str, public_keys_by_id: Mapping[int, str]) -> Any:
    """The ``biscuit_auth.Biscuit`` of a chit signed by the root key its id names; a chit naming no id is
    tried with each key. Anything else (unknown id, wrong key, garbage) is ``InvalidTokenError``."""
    key_id = root_key_id(token)
    if key_id is None:
        return _verified_by_any(token, public_keys_by_id.values())
    return _verified_by_any(token, [public_keys_by_id[key_id]] if key_id in public_keys_by_id else [])


def describe(token: str, public_keys: Mapping[int, str] | Iterable[str]) -> list[str] | None:
    """The datalog source of each block of a verified chit, or None. Keys by id: the one the chit's root
    key id names verifies it; bare keys (``biscuit_public_keys``): each is tried."""
    try:
        if isinstance(public_keys, Mapping):
            biscuit = parse_chit(token, public_keys)
        else:
            biscuit = _verified_by_any(token, public_keys)
    except InvalidTokenError:
        return None
    return [biscuit.block_source(i) for i in range(biscuit.block_count())]


def _verified_by_any(token: str, public_keys: Iterable[str]) -> Any:
    for text in public_keys:
        try:
            return biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(text))
        except _CHIT_ERRORS:
            continue
    raise InvalidTokenError("not a chit signed by a root key of this server")
