"""Calling another service for a user: token exchange (RFC 8693) and deferred delegation, on the wire.

``ServiceIdentity.for_user`` and ``ServiceIdentity.with_delegation`` are built from the pieces here:
the form of an exchange request, the reading of its answer (``ExchangedToken``), a token kept and
renewed ahead of expiry for all concurrent callers (``RenewingToken``, on ``SingleFlight``), a bounded
cache of them keyed by a hash of the token they were exchanged from (``DelegatedTokens``), and the
``httpx.Auth`` that sends one with one retry on a 401 ``invalid_token`` (``RenewingBearer``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chit.errors import FetchError, TokenRequestError
from chit.sdk.fetch import Fetched, Reply, SingleFlight

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEFERRED_DELEGATION_TYPE = "urn:chit:token-type:deferred-delegation"
BEARER = "Bearer"
NOT_APPLICABLE = "N_A"  # the token_type of an issued token that is no access token (RFC 8693 §2.2.1)
MAX_DELEGATED_TOKENS = 10_000
RETRY_AFTER_FAILURE = 5.0  # while the old token still works, how long to wait before asking again


@dataclass(frozen=True, slots=True)
class ExchangedToken:
    """What a token exchange answered; ``expires_at`` is in seconds since the epoch, on the identity's clock."""

    access_token: str = field(repr=False)
    issued_token_type: str
    scope: tuple[str, ...]
    expires_at: float


def scope_values(scope: Iterable[str] | None) -> tuple[str, ...] | None:
    """The requested permissions; one string would silently become one permission per character."""
    if isinstance(scope, str):
        raise TypeError("scope is a list of permissions, not one string")
    return None if scope is None else tuple(scope)


def token_hash(token: str) -> str:
    """What a cache keeps of a token it is keyed by: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()


def exchange_form(
    subject_token: str,
    *,
    subject_token_type: str = ACCESS_TOKEN_TYPE,
    audience: str | None = None,
    scope: tuple[str, ...] | None = None,
    requested_token_type: str | None = None,
) -> dict[str, str]:
    """The RFC 8693 §2.1 request parameters (client authentication is added by the identity)."""
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": subject_token_type,
    }
    if audience is not None:
        form["audience"] = audience
    if scope is not None:
        form["scope"] = " ".join(scope)
    if requested_token_type is not None:
        form["requested_token_type"] = requested_token_type
    return form


def token_answer(reply: Reply, *, token_type: str) -> dict[str, Any]:
    """The JSON of a successful token response of ``token_type``; ``TokenRequestError`` otherwise."""
    try:
        body: Any = reply.json()
    except FetchError:
        body = None
    if reply.status_code != 200:
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            description = body.get("error_description")
            raise TokenRequestError(
                body["error"], description if isinstance(description, str) else "", reply.status_code
            )
        raise TokenRequestError("server_error", f"token endpoint answered {reply.status_code}", 502)
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise TokenRequestError("server_error", "token endpoint answered no token", 502)
    if str(body.get("token_type", "")).lower() != token_type.lower():
        raise TokenRequestError("server_error", f"token endpoint answered no {token_type} token", 502)
    return body


def lifetime(body: dict[str, Any]) -> float:
    """``expires_in`` of a token response; a minute when the answer leaves it out."""
    expires_in = body.get("expires_in")
    return float(expires_in) if isinstance(expires_in, int) and expires_in > 0 else 60.0


def scope_of(body: dict[str, Any]) -> tuple[str, ...]:
    scope = body.get("scope")
    return tuple(scope.split()) if isinstance(scope, str) else ()


def exchanged(reply: Reply, started: float, requested_token_type: str | None) -> ExchangedToken:
    """The token an exchange answered: an access token (``Bearer``) unless another type was asked for,
    and a deferred-delegation handle is no access token (``N_A``, RFC 8693 §2.2.1)."""
    body = token_answer(
        reply, token_type=NOT_APPLICABLE if requested_token_type == DEFERRED_DELEGATION_TYPE else BEARER
    )
    issued = body.get("issued_token_type")
    if not isinstance(issued, str) or issued != (requested_token_type or issued):
        raise TokenRequestError("server_error", "token endpoint answered another token type than asked for", 502)
    return ExchangedToken(
        access_token=body["access_token"],
        issued_token_type=issued,
        scope=scope_of(body),
        expires_at=started + lifetime(body),
    )


class RenewingToken:
    """One token obtained by ``fetch`` and kept until its ``renew_at``: concurrent callers, tasks or
    threads, share one request, and a token that still works is kept when a renewal fails."""

    def __init__(
        self,
        what: str,
        fetch: Callable[[], Awaitable[Fetched[ExchangedToken]]],
        fetch_sync: Callable[[], Fetched[ExchangedToken]],
        clock: Callable[[], float],
    ) -> None:
        self.clock = clock
        self._flight: SingleFlight[ExchangedToken] = SingleFlight(
            what,
            fetch,
            fetch_sync=fetch_sync,
            errors=(TokenRequestError,),
            retry_pause=RETRY_AFTER_FAILURE,
            clock=clock,
        )

    def _usable(self, stale: str | None) -> ExchangedToken | None:
        now = self.clock()
        if now >= self._flight.renew_at:
            return None
        current = self._flight.usable(now)
        return None if current is None or current.access_token == stale else current

    async def get(self, *, stale: str | None = None) -> str:
        """A valid token; ``stale`` names one the caller saw refused."""
        current = (
            self._usable(stale)
            or self._flight.held_back(stale, self.clock(), _access_token)
            or await self._flight.obtain()
        )
        return current.access_token

    def get_sync(self, *, stale: str | None = None) -> str:
        current = (
            self._usable(stale)
            or self._flight.held_back(stale, self.clock(), _access_token)
            or self._flight.obtain_sync(lambda: self._usable(stale))
        )
        return current.access_token

    def expired(self, now: float) -> bool:
        """Holds no token that still works (none fetched yet, or the last one expired)."""
        return self._flight.usable(now) is None

    async def aclose(self) -> None:
        await self._flight.aclose()


class DelegatedTokens:
    """The tokens an identity holds for others, at most ``max_entries``: when full, expired ones go
    first, then the least recently used."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[Hashable, RenewingToken] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, make: Callable[[], RenewingToken]) -> RenewingToken:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            if len(self._entries) >= self.max_entries:
                self._prune()
            entry = self._entries[key] = make()
            return entry

    def _prune(self) -> None:
        now = self.clock()
        for key in [key for key, entry in self._entries.items() if entry.expired(now)]:
            del self._entries[key]
        # evict a tenth at once, so that a full cache of live tokens is not scanned on every insert
        keep = self.max_entries - max(1, self.max_entries // 10)
        while len(self._entries) > keep:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        """Cancel the requests under way on this event loop; the tokens stay."""
        for entry in list(self._entries.values()):
            await entry.aclose()


class RenewingBearer(httpx.Auth):
    """Sends the token of the ``RenewingToken`` that ``pick`` chooses for each request; a 401
    ``invalid_token`` answer gets one retry with a new token when the body can be sent again."""

    def __init__(self, pick: Callable[[], RenewingToken]) -> None:
        self._pick = pick

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        source = self._pick()
        token = await source.get()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if needs_retry(response) and replayable(request):
            await response.aread()
            request.headers["Authorization"] = f"Bearer {await source.get(stale=token)}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        source = self._pick()
        token = source.get_sync()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if needs_retry(response) and replayable(request):
            response.read()
            request.headers["Authorization"] = f"Bearer {source.get_sync(stale=token)}"
            yield request


def needs_retry(response: httpx.Response) -> bool:
    return response.status_code == 401 and 'error="invalid_token"' in response.headers.get("www-authenticate", "")


def replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body was a one-shot stream
    except httpx.RequestNotRead:
        return False
    return True


def _access_token(value: ExchangedToken) -> str:
    return value.access_token
