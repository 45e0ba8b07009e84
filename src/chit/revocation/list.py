"""The local revocation list a service keeps from the auth server's feed (DESIGN §4, "Revocation feed").

``RevocationList.apply`` takes the feed's events, in any order and any number of times (applying is
idempotent); ``revokes`` is the check the verifier makes on every request, cached tokens included: a few
dictionary lookups, the subject and client branches skipped while nobody was revoked that way, so it
costs well under a microsecond with 100,000 entries. What a service refuses, by the event's kind:

* ``token``: the JWT whose ``jti`` is the value (``Principal.token_id``);
* ``session``, ``delegation``: every token whose ``sid`` is the value (``Principal.session_id``; a chit's
  ``session`` fact): a refresh-token family ``rtf_…``, an API key ``key_…``, a deferred delegation
  ``dlg_…`` (the tokens redeemed from it carry its id as ``sid``);
* ``chit``: every chit holding the block whose revocation id is the value, i.e. the chit revoked and
  every one attenuated from it;
* ``subject``: every JWT of that user (``sub``) issued before ``not_before`` (``iat``); ``client``: the
  same for the tokens issued to that client or with it among the actors. A chit carries no issue time,
  so a chit of that subject or client is refused when it expires before the event does: every chit
  minted before the revocation is, and a chit minted since is too if it lives shorter than the event
  (conservative: refusing one too many is the safe side). An event without ``not_before`` revokes all;
* ``key``: every token a signing key (a JWT ``kid``, or ``root-<n>`` for chit root key ``n``) signed, and every
  ``through`` block a replaced service key (``ed25519/<hex>``) signed.
  The event's ``not_before`` is ignored: whoever holds a compromised key can sign any ``iat``, so the
  whole key goes. A principal does not say which key signed it, so this list only keeps the entry and
  tells the ``key_listeners`` (the verifier bans the key in its key clients, for good, and empties its
  verified-token cache).

Each entry stays until its event's ``expires`` (plus ``grace``, the verifier's leeway: a token is
accepted that long past its ``exp``) and is then dropped, so the list stays bounded by what is
revoked and still valid. Dropping runs when events are applied and when ``prune`` is called (the feed
does so on every answer it gets), never per request: entries leave in expiry order from a heap.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chit.revocation.base import RevocationEvent

if TYPE_CHECKING:
    from chit.policy.principals import Principal

PRUNE_EVERY = 1.0  # seconds: applying events prunes at most this often
Cutoff = tuple[int, int]  # (not_before, expires) of a subject or a client


class RevocationList:
    """Revoked tokens, sessions, chits, subjects, clients and keys until their events expire (a ``RevocationCheck``).

    ``grace`` (seconds) keeps each entry that long past its ``expires``; ``clock`` gives epoch seconds.
    """

    def __init__(self, *, grace: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.grace = grace
        self.clock = clock
        self._tokens: dict[str, int] = {}
        self._sessions: dict[str, int] = {}  # sessions, API keys and deferred delegations: a token's sid
        self._chits: dict[str, int] = {}
        self._keys: dict[str, int] = {}
        self._subjects: dict[str, Cutoff] = {}
        self._clients: dict[str, Cutoff] = {}
        # (expires, bucket, value) of every entry, soonest first; a stale one (its entry renewed) is skipped
        self._expiries: list[tuple[int, str, str]] = []
        self._next_prune = -float("inf")
        self.key_listeners: list[Callable[[str], None]] = []
        self.applied = 0  # events that changed the list, for tests and metrics

    # --- the check, on every request ----------------------------------------------------------------

    def revokes(self, principal: Principal) -> bool:
        """Whether the token ``principal`` was verified from is revoked (see the module's rules)."""
        chit = principal.chit
        if chit is None:
            if principal.token_id in self._tokens:
                return True
        elif self._chits:
            chits = self._chits
            for block_id in chit.revocation_ids:
                if block_id in chits:
                    return True
        session = principal.session_id
        if session is not None and session in self._sessions:
            return True
        if self._subjects or self._clients:
            return self._revokes_issued_before(principal)
        return False

    def _revokes_issued_before(self, principal: Principal) -> bool:
        cutoff = self._subjects.get(principal.subject)
        if cutoff is not None and _issued_before(principal, cutoff):
            return True
        clients = self._clients
        if not clients:
            return False
        cutoff = clients.get(principal.client_id)
        if cutoff is not None and _issued_before(principal, cutoff):
            return True
        for actor in principal.actors:
            cutoff = clients.get(actor.client_id) if actor.client_id is not None else None
            if cutoff is not None and _issued_before(principal, cutoff):
                return True
        return False

    # --- what the feed brings ----------------------------------------------------------------------

    def apply(self, event: RevocationEvent | Mapping[str, Any]) -> bool:
        """Add an event (a ``RevocationEvent`` or its JSON object); True when it changed the list.

        An event already applied, or one whose ``expires`` (plus ``grace``) has passed, changes nothing.
        A malformed event is ``ValueError``."""
        if not isinstance(event, RevocationEvent):
            event = RevocationEvent.from_dict(event)
        now = self.clock()
        if now >= self._next_prune:
            self.prune(now)
        expires = event.expires
        if expires + self.grace < now:
            return False  # every token it concerns has expired
        kind, value = event.kind, event.value
        if kind == "subject" or kind == "client":
            cutoffs = self._subjects if kind == "subject" else self._clients
            not_before = expires if event.not_before is None else event.not_before
            held = cutoffs.get(value)
            if held is not None:
                # a later revocation of the same subject covers an earlier one
                not_before, expires = max(not_before, held[0]), max(expires, held[1])
                if (not_before, expires) == held:
                    return False
            cutoffs[value] = (not_before, expires)
            bucket: str = kind
        else:
            bucket = "session" if kind == "delegation" else kind
            entries = self._entries(bucket)
            held_expiry = entries.get(value)
            if held_expiry is not None and held_expiry >= expires:
                return False
            entries[value] = expires
        heapq.heappush(self._expiries, (expires, bucket, value))
        self.applied += 1
        if kind == "key":
            for listener in self.key_listeners:
                listener(value)
        return True

    def prune(self, now: float | None = None) -> int:
        """Drop the entries whose events have expired (``grace`` past ``expires``); how many left."""
        if now is None:
            now = self.clock()
        self._next_prune = now + PRUNE_EVERY
        expiries = self._expiries
        limit = now - self.grace
        dropped = 0
        while expiries and expiries[0][0] < limit:
            expires, bucket, value = heapq.heappop(expiries)
            if bucket == "subject" or bucket == "client":
                cutoffs = self._subjects if bucket == "subject" else self._clients
                cutoff = cutoffs.get(value)
                if cutoff is not None and cutoff[1] == expires:
                    del cutoffs[value]
                    dropped += 1
            else:
                entries = self._entries(bucket)
                if entries.get(value) == expires:
                    del entries[value]
                    dropped += 1
        return dropped

    def _entries(self, bucket: str) -> dict[str, int]:
        if bucket == "token":
            return self._tokens
        if bucket == "session":
            return self._sessions
        if bucket == "chit":
            return self._chits
        return self._keys

    # --- what it holds -----------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries held (one per revoked token, session, chit block, subject, client and key)."""
        return (
            len(self._tokens)
            + len(self._sessions)
            + len(self._chits)
            + len(self._keys)
            + len(self._subjects)
            + len(self._clients)
        )

    def __len__(self) -> int:
        return self.size

    @property
    def revoked_keys(self) -> frozenset[str]:
        """The key ids revoked and not yet expired."""
        return frozenset(self._keys)

    def __repr__(self) -> str:
        return f"RevocationList(size={self.size})"


def _issued_before(principal: Principal, cutoff: Cutoff) -> bool:
    """Whether a token was issued before ``not_before``: by its ``iat``, or for a chit (no issue time)
    by whether it expires before the event does."""
    issued_at = principal.issued_at
    if issued_at is not None:
        return issued_at < cutoff[0]
    return principal.expires_at.timestamp() < cutoff[1]
