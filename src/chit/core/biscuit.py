"""Chits (Biscuit v3 tokens) on the auth server: root keys, minting, reading. The only module that imports
``biscuit_auth`` on the server side.

A chit's authority block states, in the vocabulary of DESIGN §4 ("Chits on the wire")::

    issuer("<iss>");
    subject("<sub>");
    client("<client_id>");
    right("<service:resource:action>");        one per permission; never one with a '*' segment
    actor(<n>, "<sub>", "<client_id>");        one per actor of the delegation chain, 0 = the current one
    session("<sid>");                          when it comes from a session, an API key or a deferred delegation
    check if time($t), $t <= <expiry, UTC>;

``session`` is chit's addition to DESIGN §4's vocabulary: the ``sid`` a JWT of the same origin carries, so
that revoking a session, an API key or a deferred delegation (one ``session``/``delegation`` event) reaches
the chits minted from it as it reaches the JWTs. A verifier that does not know the fact ignores it.

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
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import biscuit_auth

from chit.core.chit_blocks import MalformedChitError, read_blocks
from chit.errors import ConfigurationError, InvalidTokenError

WILDCARD = "*"
_CHIT_ERRORS = (
    biscuit_auth.BiscuitValidationError,
    biscuit_auth.BiscuitBlockError,
    biscuit_auth.BiscuitSerializationError,
    biscuit_auth.AuthorizationError,
    biscuit_auth.DataLogError,
    ValueError,
    TypeError,
)  # the binding's errors share no base class
MAX_READ_BLOCKS = 16  # a chit with more blocks is not read (every service refuses it: ChitLimits.max_blocks)
_READ_TIME = timedelta(milliseconds=20)  # what reading the authority facts may take, however the chit was attenuated
_READ_ITERATIONS = 100
_READ_FACTS = 1_000


@dataclass(frozen=True, slots=True)
class MintedChit:
    token: str  # base64url with '=' padding, as ``to_base64()`` gives it
    revocation_ids: tuple[str, ...]  # one per block; the authority block's first (128 hex characters)

    @property
    def revocation_id(self) -> str:
        """The authority block's revocation id: revoking it revokes the chit and all attenuated from it."""
        return self.revocation_ids[0]


@dataclass(frozen=True, slots=True)
class ChitAuthority:
    """What a verified chit's authority block states (DESIGN §4, "Chits on the wire"), and the revocation ids
    of all its blocks: the authority block's first, the last block's last."""

    issuer: str
    subject: str
    client_id: str
    rights: tuple[str, ...]  # sorted
    actors: tuple[tuple[str, str], ...]  # (sub, client_id), current actor first
    expires_at: int  # epoch seconds: the earliest expiry check of the authority block
    revocation_ids: tuple[str, ...]
    session_id: str | None = None  # the session, API key or deferred delegation it was minted from
    valid_until: int = 0  # epoch seconds: the earliest expiry check of any block (an attenuated ``ttl`` too)

    @property
    def last_revocation_id(self) -> str:
        """The revocation id of the chit's last block: revoking it revokes this chit and every chit attenuated
        from it, not the chit it was attenuated from (whose blocks are a prefix of this one's)."""
        return self.revocation_ids[-1]


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
    session_id: str | None = None,
) -> MintedChit:
    """A chit signed by the root key ``root_key_id``: its authority block states exactly the vocabulary above.
    ``actors`` is the delegation chain as ``(sub, client_id)``, current actor first; ``expires_at`` epoch seconds;
    ``session_id`` the session it comes from, if any."""
    lines = ["issuer({iss});", "subject({sub});", "client({client});"]
    values: dict[str, Any] = {"iss": issuer, "sub": subject, "client": client_id}
    for index, permission in enumerate(sorted({p for p in permissions if is_concrete(p)})):
        lines.append(f"right({{r{index}}});")
        values[f"r{index}"] = permission
    for index, (actor_subject, actor_client) in enumerate(actors):
        lines.append(f"actor({{n{index}}}, {{as{index}}}, {{ac{index}}});")
        values.update({f"n{index}": index, f"as{index}": actor_subject, f"ac{index}": actor_client})
    if session_id is not None:
        lines.append("session({sid});")
        values["sid"] = session_id
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
    session_id: str | None = None,
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
        session_id=session_id,
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


def read_chit(token: str, public_keys_by_id: Mapping[int, str]) -> ChitAuthority:
    """The authority of a chit signed by one of ``public_keys_by_id`` (as ``parse_chit``). Facts are read by
    querying an authorizer built for the token (only the authority block is trusted there: an appended
    block cannot state a subject), the expiry from the authority block's signed bytes, never from printed
    text. Anything that is no chit of these keys, or states no single issuer, subject and client, or no
    expiry, is ``InvalidTokenError``. Expiry and revocation are not decided here."""
    parsed = parse_chit(token, public_keys_by_id)
    try:
        if parsed.block_count() > MAX_READ_BLOCKS:
            raise InvalidTokenError(f"chit has more than {MAX_READ_BLOCKS} blocks")
        builder = cast(Any, biscuit_auth.AuthorizerBuilder("allow if true;"))  # the stub lacks limits()
        limits = builder.limits()
        limits.max_time, limits.max_iterations, limits.max_facts = _READ_TIME, _READ_ITERATIONS, _READ_FACTS
        builder.set_limits(limits)
        authorizer = builder.build(parsed)

        def terms(name: str, arity: int) -> list[list[Any]]:
            variables = ", ".join(f"$v{i}" for i in range(arity))
            rule = biscuit_auth.Rule(f"found({variables}) <- {name}({variables})")
            return [list(fact.terms) for fact in authorizer.query(rule)]

        issuers, subjects, clients = terms("issuer", 1), terms("subject", 1), terms("client", 1)
        rights, actors, sessions = terms("right", 1), terms("actor", 3), terms("session", 1)
        blocks = read_blocks(parsed.to_bytes())
        revocation_ids = tuple(str(rid) for rid in parsed.revocation_ids)
    except (*_CHIT_ERRORS, MalformedChitError) as exc:
        raise InvalidTokenError("the chit does not read") from exc
    expiries = [date for check in blocks[0].checks if (date := check.expiry) is not None]
    attenuated = [date for block in blocks[1:] for check in block.checks if (date := check.expiry) is not None]
    singles = [_single_string(found) for found in (issuers, subjects, clients)]
    chain = sorted((n, sub, client) for n, sub, client in actors if isinstance(n, int))
    session = _single_string(sessions) if sessions else None
    if None in singles or not expiries or [n for n, _, _ in chain] != list(range(len(actors))):
        raise InvalidTokenError("the chit's authority block does not state the vocabulary")
    if sessions and session is None:
        raise InvalidTokenError("the chit's authority block states a malformed session")
    return ChitAuthority(
        issuer=cast(str, singles[0]),
        subject=cast(str, singles[1]),
        client_id=cast(str, singles[2]),
        rights=tuple(sorted(str(right) for [right] in rights)),
        actors=tuple((str(sub), str(client)) for _, sub, client in chain),
        expires_at=min(expiries),
        revocation_ids=revocation_ids,
        session_id=session,
        valid_until=min([*expiries, *attenuated]),
    )


def _single_string(found: list[list[Any]]) -> str | None:
    """The one string value of a one-term fact stated once, else None."""
    if len(found) != 1 or not isinstance(found[0][0], str) or not found[0][0]:
        return None
    return found[0][0]
