"""Chits on a service: verify one with the issuer's root keys, then decide with what the service knows.

The only module on the service side that imports ``biscuit_auth``. What a chit says (DESIGN §4,
"Chits on the wire"), in its authority block, signed by the auth server's root key::

    issuer("<iss>"); subject("<sub>"); client("<client_id>");
    right("<service:resource:action>");         one per permission, never one with a '*' segment
    actor(<n>, "<sub>", "<client_id>");         one per actor of the delegation chain, 0 = the current one
    session("<sid>");                           at most one: the session, API key or deferred delegation
    check if time($t), $t <= <expiry>;

``session`` (chit's addition to DESIGN §4, see ``chit.core.biscuit``) lets the revocation list refuse a
chit whose session was revoked, as it refuses a JWT by its ``sid``.

What a service that handled the request states, in a third-party block it appends before forwarding the
chit, signed with its own service key (the public halves are published at discovery's ``service_keys_uri``)::

    through("<service id>");                    the service whose key signs the block handled the request

Such a block proves the path only when its signer is the key published for that very service id
(``VerifiedChit.vouchers`` gives each signer with the id it states; the SDK's verifier matches them).

What the service's authorizer adds (its ambient facts): ``service("<id>")``, ``operation("<permission>")``
for each permission the route or the decision requires, ``method("GET")`` and ``path("/images/7")`` when
the adapter knows the request, ``time(<now>)``, and ``resource("<id>")`` / ``owner("<id>")`` where the
route body decides on a resource. ``path`` is the path the router matches: percent-decoded, without the
query (the ASGI ``scope["path"]``, httpx's ``URL.path``), never re-escaped: a request to ``/docs/a%3Fb``
states ``path("/docs/a?b")``, one to ``/docs/a%253Fb`` ``path("/docs/a%3Fb")``. A decoded path names one
route and one set of path parameters, whichever way a client escaped it; ``%2F`` and ``/`` decode alike,
as the router matches them alike. Its own checks: ``check if right("<permission>")`` for each required
operation; its policy: ``allow if right($r), $r.starts_with("<service>:")``.

**Verification** (``ChitAuthorizer.read``, once per token, then cached by the SDK): the size and block
count are checked on the bytes before any signature; the root key is the one the token's root key id
names; then the blocks are read from the verified bytes (``chit.core.chit_blocks``, not the printed
datalog, which does not escape quotes; a block that repeats a field meant to occur once, which protobuf
decoders read differently, is refused; blocks already read are remembered by their exact bytes and
symbol table) and the authority block must state the vocabulary above, name this verifier's issuer,
carry a right of this service and not have expired. Appended blocks (first- or third-party) are bounded
*before* any datalog runs, because the binding checks its time limit only between evaluation rounds
(measured: a 2 KB block of generating rules ran 3.7 s; a check joining three predicates 1.2 s; one
``.matches()`` with a ``\\w{1000}`` pattern 120 ms, the pattern being compiled at each evaluation; three
nested closures over a 1,000-element array literal 525 s):

* no rules, no closures (``.all``/``.any``), no regular expressions, no extern functions;
* at most ``max_block_facts`` facts per block, of scalar terms only; at most ``max_block_checks`` checks,
  of at most ``max_check_queries`` alternatives (``or``), each joining at most ``max_query_predicates``
  predicates with at most ``max_query_ops`` operations;
* an estimate of the work of every check (``_work``) within ``max_work``: for each alternative, a fixed
  cost plus, for each combination of facts its predicates can match, one unit per operation and literal
  element. Joins are what cost: a two-predicate join over 128 facts ran 15 ms, over 32 facts 0.6 ms.

Anything else is refused with ``InvalidTokenError`` (401), never evaluated.

**Decisions** (``ChitAuthorizer.evaluate``, per request): the authorizer is rebuilt from the cached,
verified ``Biscuit`` with the request's facts, under explicit limits (``ChitLimits``). A check that fails
is ``InsufficientScopeError`` (403) naming it; limits reached are ``InvalidTokenError`` (401). Which
checks are evaluated where: at the route's dependency (or middleware) every check is evaluated with the
facts known there; a check that fails there *and* mentions a predicate only the route body can know
(``resource``, ``owner``; ``operation`` when the route names no permission) is left pending instead of
refused. Every decision of the route body (``principal.require``, ``require_owner``, ``can``,
``require_actor``) evaluates every check again, nothing left pending, with the facts it states
(``resource=``, ``owner``, the permission asked): so a chit restricted to ``resource("img-7")`` is refused
for another image, and for any decision that names no image. A route body that takes no decision
never evaluates pending checks: a route acting on a resource must decide on it.

A chit whose only block is the authority block with only its expiry check decides exactly like a JWT
with the same permissions, so it is decided without running datalog (rights and expiry are checked in
Python); ``ChitRequest.plain``.
"""

from __future__ import annotations

import binascii
import functools
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import biscuit_auth

from chit.core.chit_blocks import (
    BINARY,
    BINARY_ALL,
    BINARY_ANY,
    BINARY_FFI,
    BINARY_REGEX,
    CLOSURE,
    UNARY,
    UNARY_FFI,
    Block,
    Container,
    MalformedChitError,
    outline,
    read_blocks,
)
from chit.errors import InvalidTokenError

# the binding's errors share no base class
_TOKEN_ERRORS = (
    biscuit_auth.BiscuitValidationError,
    biscuit_auth.BiscuitBlockError,
    biscuit_auth.BiscuitSerializationError,
    biscuit_auth.BiscuitBuildError,
    ValueError,
    TypeError,
)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_FAILED_CHECK = re.compile(r"Check n°(\d+) in (?:block n°(\d+)|authorizer): ")
_LIMITS_REACHED = "Reached Datalog execution limits"
_EXECUTION_FAILURE = "Datalog  execution failure: "  # (sic: two spaces, as the binding spells it)
MIN_CHIT_LENGTH = 128  # characters: a biscuit's keys and signatures alone take more
MAX_DELEGATION_DEPTH = 8
WILDCARD = "*"
# predicates only a route body can know; a check naming one may wait for it there
BODY_PREDICATES = frozenset({"resource", "owner"})
# how many facts of each name the service's authorizer adds at most (operations: those of the route and
# of one decision), for the work estimate of appended checks
AMBIENT_FACTS = {"service": 1, "operation": 8, "method": 1, "path": 1, "time": 1, "resource": 1, "owner": 1}
_FORBIDDEN_OPS = {
    CLOSURE: "a closure",
    BINARY + BINARY_ALL: "a closure (.all)",
    BINARY + BINARY_ANY: "a closure (.any)",
    BINARY + BINARY_REGEX: "a regular expression (.matches)",
    BINARY + BINARY_FFI: "an extern function",
    UNARY + UNARY_FFI: "an extern function",
}


@dataclass(frozen=True, slots=True)
class ChitLimits:
    """What a service accepts of a chit, and the limits its datalog runs under. Figures measured with
    biscuit-python 0.4.0 on 2 shared vCPUs (``tests/core/test_chit_authorizer.py`` re-measures the bombs):

    * ``max_size`` 16 KiB of token text, the size the auth server accepts for a token parameter; a chit
      with 15 typical attenuation blocks is about 5 KB;
    * ``max_blocks`` 16, authority included: each block is one more signature to check (about 65 µs), so
      a 16-block chit verifies in about 1.1 ms; a cart → payment → email chain with an attenuation and a
      third-party block per hop has 5;
    * ``max_block_facts`` 16 (a two-predicate join over 128 facts ran 15 ms, over 32 facts 0.6 ms),
      ``max_block_checks`` 32, ``max_check_queries`` 4 alternatives, ``max_query_predicates`` 2 (a
      three-predicate join over 32 facts ran 35 ms), ``max_query_ops`` 64 operations per alternative
      (a chain of 2,000 string concatenations ran 5.6 ms: its cost grows with the square of its length);
    * ``max_work`` 10,000 units of estimated work (``_work``): measured at 0.07-0.5 µs per unit across
      joins, expressions and literal sets, so the costliest chit accepted runs in a few milliseconds, while
      a typical attenuation block costs about 120 units;
    * ``max_time`` 20 ms, ``max_iterations`` 100, ``max_facts`` 1,000, the binding's own limits, explicit.
      With no rules in any block no fact is generated and one iteration suffices. The binding's default
      ``max_time`` of 1 ms refused about 0.2 % of valid 3-block chits on a busy CPU (none at 50 ms);
      accepted chits evaluate in well under 1 ms, so 20 ms only fires for a CPU stalled far beyond that.
      That limit is wall-clock time: when it strikes an evaluation whose thread ran less than a quarter of
      it on a CPU (a machine far overloaded), the evaluation runs again, up to ``STALL_RETRIES`` times;
      a chit that makes the evaluation work exhausts facts, iterations or its own CPU time, and is refused.
    """

    max_size: int = 16 * 1024
    max_blocks: int = 16
    max_block_facts: int = 16
    max_block_checks: int = 32
    max_check_queries: int = 4
    max_query_predicates: int = 2
    max_query_ops: int = 64
    max_work: int = 10_000
    max_time: timedelta = timedelta(milliseconds=20)
    max_iterations: int = 100
    max_facts: int = 1_000

    def __post_init__(self) -> None:
        if self.max_time < timedelta(milliseconds=10):
            raise ValueError("max_time below 10 ms refuses valid chits on a busy CPU")


DEFAULT_LIMITS = ChitLimits()
STALL_RETRIES = 3  # evaluations run again when the time limit struck a thread that barely ran
MAX_REMEMBERED_OUTCOMES = 1024  # tokens of at most 16 KiB: at most 16 MiB held
MAX_BOUND_REQUESTS = 64  # routes (operations, method, path) remembered per verified chit
MAX_RESTRICTION_VALUES = 64  # operations, services or resources one attenuation names
THROUGH = "through"  # the fact of a service's signed block: through("<service id>")
QUERY_COST = 25  # units: the fixed cost of evaluating one alternative of a check, whatever it matches


class UnknownRootKeyError(InvalidTokenError):
    """The chit names a root key that is not (yet) known: the published keys may be worth a refetch."""

    def __init__(self, key_id: int | None) -> None:
        super().__init__("token is signed by an unknown root key")
        self.key_id = key_id


# --- root keys ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def public_key(text: str) -> Any:
    """The binding's ``PublicKey`` for ``ed25519/<hex>`` (or ``secp256r1/<hex>``); ``ValueError`` otherwise."""
    if not isinstance(text, str):
        raise ValueError("a root public key is a string")
    try:
        return biscuit_auth.PublicKey(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{text[:80]!r} is not a biscuit public key") from exc


@dataclass(frozen=True, slots=True)
class RootKeys:
    """The issuer's root public keys: by root key id (``biscuit_root_keys``), and any published without one."""

    by_id: Mapping[int, str] = field(default_factory=dict)
    unlabeled: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.by_id or self.unlabeled)

    def texts(self) -> frozenset[str]:
        return frozenset(self.by_id.values()) | frozenset(self.unlabeled)

    def candidates(self, key_id: int | None) -> tuple[Any, ...]:
        """The keys that may have signed a chit naming ``key_id``: the one with that id, else those without
        an id (a chit naming no id: every key)."""
        if key_id is not None and key_id in self.by_id:
            return (public_key(self.by_id[key_id]),)
        texts = self.unlabeled if key_id is not None else (*self.by_id.values(), *self.unlabeled)
        return tuple(public_key(text) for text in texts)


def parse_root_keys(document: Mapping[str, Any]) -> RootKeys:
    """The root keys of a discovery document; entries that are not usable keys are skipped."""
    by_id: dict[int, str] = {}
    for entry in document.get("biscuit_root_keys") or ():
        if not isinstance(entry, Mapping):
            continue
        key_id, text = entry.get("id"), entry.get("public_key")
        if isinstance(key_id, int) and not isinstance(key_id, bool) and 0 <= key_id < 2**32 and _usable(text):
            by_id.setdefault(key_id, str(text).strip())
    labeled = set(by_id.values())
    unlabeled = tuple(
        text.strip()
        for text in document.get("biscuit_public_keys") or ()
        if _usable(text) and text.strip() not in labeled
    )
    return RootKeys(by_id, unlabeled)


def _usable(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        public_key(text)
    except ValueError:
        return False
    return True


# --- what a verified chit says ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authority:
    """The authority block's vocabulary."""

    issuer: str
    subject: str
    client_id: str
    rights: frozenset[str]
    actors: tuple[tuple[str, str], ...]  # (subject, client id), current actor first
    expires_at: int  # epoch seconds: valid while time <= expires_at
    session_id: str | None = None  # ``session("<sid>")``: what revoking that session revokes too


@dataclass(frozen=True, eq=False)
class VerifiedChit:
    """A chit whose signatures, vocabulary and bounds passed; the parsed ``Biscuit`` decides per request."""

    token: str
    biscuit: Any = field(repr=False)
    authority: Authority
    revocation_ids: tuple[str, ...]
    expires_at: int  # the earliest expiry check of any block: valid while time <= expires_at
    checks: Mapping[tuple[int, int], frozenset[str]] = field(repr=False)  # (block, index): predicates named
    plain: bool  # the authority block alone, with only its expiry check
    # (signer public key ``ed25519/<hex>``, service id) of each through("<id>") fact of a third-party block
    vouchers: tuple[tuple[str, str], ...] = ()
    timeless: bool = False  # the time decides nothing but its expiry (``_timeless``)

    def moment(self, second: int) -> int:
        """What an outcome at ``second`` depends on in time: nothing (-1) while a timeless chit lives,
        else the second itself."""
        return -1 if self.timeless and second <= self.expires_at else second


def is_chit(token: str) -> bool:
    """Whether a bearer token is a chit (biscuit base64url: no dot, long) rather than a JWT."""
    return len(token) >= MIN_CHIT_LENGTH and "." not in token and _BASE64URL.fullmatch(token) is not None


def _decode(token: str) -> bytes:
    """The bytes of a base64url token (padding optional, at most two ``=``); anything outside the alphabet is
    refused (``a2b_base64`` in strict mode, after the two URL-safe letters are mapped to the standard ones)."""
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InvalidTokenError("token is not a chit: not base64url") from exc
    body = data.rstrip(b"=")
    if len(data) - len(body) > 2 or b"+" in body or b"/" in body:
        raise InvalidTokenError("token is not a chit: not base64url")
    try:
        return binascii.a2b_base64(body.translate(_URLSAFE) + b"=" * (-len(body) % 4), strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTokenError("token is not a chit: not base64url") from exc


# --- verification and decisions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the chit's checks say: the reason it is refused (None: allowed), and the checks left pending."""

    refusal: str | None = None
    pending: tuple[str, ...] = ()


ALLOWED = Outcome()


class ChitAuthorizer:
    """Verifies chits of ``issuer`` for the service ``service`` and evaluates them with its ambient facts."""

    def __init__(self, issuer: str, service: str, limits: ChitLimits = DEFAULT_LIMITS) -> None:
        self.issuer = issuer
        self.service = service
        self.limits = limits
        # Any: the binding's stub lacks limits()/set_limits() and types merge() as taking an Authorizer
        self._base = cast(
            Any,
            biscuit_auth.AuthorizerBuilder(
                "service({service}); allow if right($r), $r.starts_with({prefix});",
                {"service": service, "prefix": service + ":"},
            ),
        )
        run_limits = self._base.limits()
        run_limits.max_time = limits.max_time
        run_limits.max_iterations = limits.max_iterations
        run_limits.max_facts = limits.max_facts
        self._run_limits = run_limits
        # CPU seconds under which a time limit reached means a stalled CPU: then the evaluation runs once more
        self._stall_threshold = limits.max_time.total_seconds() / 4
        self._time: tuple[int, Any] = (-1, None)
        self._outcomes: dict[tuple[Any, ...], Outcome] = {}
        self._lock = threading.Lock()

    # --- verification, once per token

    def read(self, token: str, keys: Callable[[int | None], Sequence[Any]], now: float) -> VerifiedChit:
        """The verified chit, or ``InvalidTokenError`` (``UnknownRootKeyError`` when no key it could name is
        known). ``keys(root_key_id)`` gives the candidate root public keys."""
        limits = self.limits
        if len(token) > limits.max_size:
            raise InvalidTokenError(f"token is larger than {limits.max_size} bytes")
        raw = _decode(token)
        try:
            shape = outline(raw)
        except MalformedChitError as exc:
            raise InvalidTokenError("token is not a chit") from exc
        if shape.blocks > limits.max_blocks:
            raise InvalidTokenError(f"chit has {shape.blocks} blocks; at most {limits.max_blocks} are accepted")
        candidates = keys(shape.root_key_id)
        if not candidates:
            raise UnknownRootKeyError(shape.root_key_id)
        biscuit = _verified(raw, candidates)
        try:
            blocks = read_blocks(biscuit.to_bytes())
        except MalformedChitError as exc:
            raise InvalidTokenError(f"chit does not decode: {exc}") from exc
        if len(blocks) != biscuit.block_count():
            raise InvalidTokenError("chit does not decode: block count")
        authority = _authority(blocks[0])
        if authority.issuer != self.issuer:
            raise InvalidTokenError("token was issued by another issuer")
        prefix = self.service + ":"
        if not any(right.startswith(prefix) for right in authority.rights):
            raise InvalidTokenError("token is not meant for this audience")
        restrict(blocks, limits)
        # an attenuated lifetime is an expiry too: past it the chit is expired (401), not refused (403)
        expires_at = min([authority.expires_at, *(date for block in blocks[1:] for date in _expiries(block))])
        if int(now) > expires_at:
            raise InvalidTokenError("token has expired")
        checks = {
            (number, index): check.names
            for number, block in enumerate(blocks)
            for index, check in enumerate(block.checks)
        }
        return VerifiedChit(
            token=token,
            biscuit=biscuit,
            authority=authority,
            revocation_ids=tuple(biscuit.revocation_ids),
            expires_at=expires_at,
            checks=checks,
            plain=len(blocks) == 1 and blocks[0].rules == 0 and len(blocks[0].checks) == 1,
            vouchers=_vouchers(biscuit, blocks),
            timeless=_timeless(blocks),
        )

    # --- decisions, per request

    def evaluate(
        self,
        chit: VerifiedChit,
        *,
        now: float,
        operations: Iterable[str] = (),
        method: str | None = None,
        path: str | None = None,
        resource: str | None = None,
        owner: str | None = None,
        defer: frozenset[str] = frozenset(),
    ) -> Outcome:
        """Run the chit's checks with these ambient facts. A failed check naming one of ``defer`` is pending
        rather than refused. Limits reached are ``InvalidTokenError``.

        Datalog is deterministic and ``time`` is in whole seconds, so the outcome for the same chit and the
        same facts within one second is remembered (``_outcomes``, bounded): a chit presented again and again
        on one route costs a dictionary lookup. For a chit that reads the time only to expire, the outcome
        holds until it expires, whatever the second (``VerifiedChit.moment``)."""
        second = int(now)
        operations = tuple(operations)
        key = (chit.token, chit.moment(second), operations, method, path, resource, owner, defer)
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = self._evaluate(chit, second, operations, method, path, resource, owner, defer)
            with self._lock:  # decisions of sync routes run in threads
                if len(self._outcomes) >= MAX_REMEMBERED_OUTCOMES:
                    self._outcomes.pop(next(iter(self._outcomes)), None)  # the oldest
                self._outcomes[key] = outcome
        return outcome

    def _evaluate(
        self,
        chit: VerifiedChit,
        second: int,
        operations: tuple[str, ...],
        method: str | None,
        path: str | None,
        resource: str | None,
        owner: str | None,
        defer: frozenset[str],
    ) -> Outcome:
        builder = cast(Any, biscuit_auth.AuthorizerBuilder())
        builder.merge(self._base)
        builder.set_limits(self._run_limits)  # (merge does not carry limits)
        builder.add_fact(self._time_fact(second))
        for operation in operations:
            builder.add_fact(_fact("operation", operation))
            builder.add_check(_right_check(operation))
        for name, value in (("method", method), ("path", path), ("resource", resource), ("owner", owner)):
            if value is not None:
                builder.add_fact(_fact(name, value) if name == "method" else _uncached_fact(name, value))
        for attempt in range(STALL_RETRIES + 1):
            worked = time.thread_time()  # from the build: the binding's clock may start there
            try:
                builder.build(chit.biscuit).authorize()
            except biscuit_auth.AuthorizationError as exc:
                message = str(exc)
                worked = time.thread_time() - worked
                if attempt < STALL_RETRIES and message.startswith(_LIMITS_REACHED) and worked < self._stall_threshold:
                    # the wall clock ran out while this thread waited for a CPU, not while it worked on the
                    # chit (a chit that makes work exhausts facts or iterations, or the time on the CPU)
                    continue
                return self._refusal(chit, message, defer)
            except BaseException as exc:
                _unless_panic(exc)
                raise InvalidTokenError("chit evaluation failed") from None
            return ALLOWED
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _time_fact(self, second: int) -> Any:
        cached_second, fact = self._time
        if cached_second != second:
            fact = biscuit_auth.Fact("time({t})", {"t": datetime.fromtimestamp(second, UTC)})
            self._time = (second, fact)
        return fact

    def _refusal(self, chit: VerifiedChit, message: str, defer: frozenset[str]) -> Outcome:
        if message.startswith(_LIMITS_REACHED):
            raise InvalidTokenError("chit evaluation reached its limits")
        if message.startswith(_EXECUTION_FAILURE):
            return Outcome(f"chit checks could not be evaluated: {message[len(_EXECUTION_FAILURE) :][:200]}")
        failed = _failed_checks(message)
        refused: list[str] = []
        pending: list[str] = []
        for block, index, text in failed:
            named = chit.checks.get((block, index), frozenset()) if block is not None else frozenset()
            where = "the service's authorizer" if block is None else f"block {block}"
            described = f"{text} ({where})"
            (pending if block is not None and named & defer else refused).append(described)
        if refused:
            return Outcome(f"chit check failed: {refused[0]}", tuple(pending))
        if not message.startswith("authorization failed: an allow policy matched"):
            return Outcome(f"chit carries no right of {self.service}")
        return Outcome(None, tuple(pending))


def _vouchers(biscuit: Any, blocks: Sequence[Block]) -> tuple[tuple[str, str], ...]:
    """(signer, service id) of each ``through("<id>")`` fact of a third-party block: the signer as the binding
    verified it (``block_external_key``), the fact as read from the signed bytes."""
    found: list[tuple[str, str]] = []
    for number, block in enumerate(blocks):
        if number == 0 or not block.third_party:
            continue
        try:
            signer = biscuit.block_external_key(number)
        except _TOKEN_ERRORS:
            continue
        if signer is None:
            continue
        for fact in block.facts:
            if fact.name == THROUGH and len(fact.terms) == 1 and isinstance(fact.terms[0], str) and fact.terms[0]:
                found.append((str(signer), fact.terms[0]))
    return tuple(found)


def _verified(raw: bytes, candidates: Sequence[Any]) -> Any:
    for key in candidates:
        try:
            return biscuit_auth.Biscuit.from_bytes(raw, key)
        except _TOKEN_ERRORS:
            continue
        except BaseException as exc:
            _unless_panic(exc)
            raise InvalidTokenError("chit cannot be read") from None
    raise InvalidTokenError("chit signature is invalid")


def _unless_panic(exc: BaseException) -> None:
    """Re-raise ``exc`` unless it is a Rust panic in the binding (``pyo3_runtime.PanicException``, not an
    ``Exception``): a token that makes the binding panic is refused, never answered with a 500."""
    if type(exc).__name__ != "PanicException":
        raise exc


def _failed_checks(message: str) -> list[tuple[int | None, int, str]]:
    """(block or None for the authorizer, check index, source) of each failed check an ``AuthorizationError``
    lists. A check's source may itself contain text that looks like an entry: such entries can only add
    failures, never hide one, since every real entry's prefix is the binding's."""
    matches = list(_FAILED_CHECK.finditer(message))
    failed: list[tuple[int | None, int, str]] = []
    for position, match in enumerate(matches):
        end = matches[position + 1].start() - 2 if position + 1 < len(matches) else len(message)
        block = match.group(2)
        failed.append((None if block is None else int(block), int(match.group(1)), message[match.end() : end][:200]))
    return failed


@functools.lru_cache(maxsize=4096)
def _fact(name: str, value: str) -> Any:
    return biscuit_auth.Fact(f"{name}({{v}})", {"v": value})


def _uncached_fact(name: str, value: str) -> Any:
    return biscuit_auth.Fact(f"{name}({{v}})", {"v": value})


@functools.lru_cache(maxsize=4096)
def _right_check(operation: str) -> Any:
    return biscuit_auth.Check("check if right({p})", {"p": operation})


# --- the authority block ------------------------------------------------------------------------------


def _authority(block: Block) -> Authority:
    singles: dict[str, list[str]] = {"issuer": [], "subject": [], "client": []}
    sessions: list[str] = []
    rights: set[str] = set()
    actors: dict[int, tuple[str, str]] = {}
    for name, terms in block.facts:
        if name in singles:
            singles[name].append(_string(name, terms))
        elif name == "session":
            sessions.append(_string(name, terms))
        elif name == "right":
            right = _string(name, terms)
            if WILDCARD not in right.split(":"):  # never honoured: chits carry concrete permissions only
                rights.add(right)
        elif name == "actor":
            position, subject, client = _actor(terms)
            if position in actors:
                raise InvalidTokenError("chit authority block states two actors at one position")
            actors[position] = (subject, client)
    for name, values in singles.items():
        if len(values) != 1:
            raise InvalidTokenError(f"chit authority block must state exactly one {name}")
    if len(sessions) > 1:
        raise InvalidTokenError("chit authority block states more than one session")
    if sorted(actors) != list(range(len(actors))):
        raise InvalidTokenError("chit actors are not numbered from 0")
    if len(actors) > MAX_DELEGATION_DEPTH:
        raise InvalidTokenError(f"token delegation chain is longer than {MAX_DELEGATION_DEPTH}")
    expiries = _expiries(block)
    if not expiries:
        raise InvalidTokenError("chit authority block has no expiry check")
    return Authority(
        issuer=singles["issuer"][0],
        subject=singles["subject"][0],
        client_id=singles["client"][0],
        rights=frozenset(rights),
        actors=tuple(actors[n] for n in range(len(actors))),
        expires_at=min(expiries),
        session_id=sessions[0] if sessions else None,
    )


def _expiries(block: Block) -> list[int]:
    """The dates of the block's expiry checks (``Check.expiry``)."""
    return [date for check in block.checks if (date := check.expiry) is not None]


def _timeless(blocks: Sequence[Block]) -> bool:
    """Whether the chit reads the time only in expiry checks (and holds no rules, which could read it):
    then, until its earliest expiry, every evaluation with the same other facts has the same outcome."""
    return all(
        not block.rules and all("time" not in check.names or check.expiry is not None for check in block.checks)
        for block in blocks
    )


def _string(name: str, terms: tuple[object, ...]) -> str:
    if len(terms) != 1 or not isinstance(terms[0], str) or not terms[0]:
        raise InvalidTokenError(f"chit authority block has a malformed {name} fact")
    return terms[0]


def _actor(terms: tuple[object, ...]) -> tuple[int, str, str]:
    if len(terms) == 3:
        position, subject, client = terms
        strings = isinstance(subject, str) and subject != "" and isinstance(client, str)
        if isinstance(position, int) and not isinstance(position, bool) and strings:
            return position, str(subject), str(client)
    raise InvalidTokenError("chit authority block has a malformed actor fact")


# --- bounds on appended blocks ------------------------------------------------------------------------


def restrict(blocks: Sequence[Block], limits: ChitLimits = DEFAULT_LIMITS) -> None:
    """Refuse (``InvalidTokenError``) appended blocks outside the bounds of the module's docstring."""
    for number, block in enumerate(blocks[1:], start=1):
        where = f"chit block {number}"
        if block.rules:
            raise InvalidTokenError(f"{where} holds rules; appended blocks may hold only checks and facts")
        if len(block.facts) > limits.max_block_facts:
            raise InvalidTokenError(f"{where} holds {len(block.facts)} facts; at most {limits.max_block_facts}")
        if any(isinstance(term, Container) for fact in block.facts for term in fact.terms):
            raise InvalidTokenError(f"{where} holds a fact with a set, array or map")
        if len(block.checks) > limits.max_block_checks:
            raise InvalidTokenError(f"{where} holds {len(block.checks)} checks; at most {limits.max_block_checks}")
        for check in block.checks:
            if len(check.queries) > limits.max_check_queries:
                raise InvalidTokenError(
                    f"{where} has a check of {len(check.queries)} alternatives; at most {limits.max_check_queries}"
                )
            for query in check.queries:
                if len(query.names) > limits.max_query_predicates:
                    raise InvalidTokenError(
                        f"{where} has a check joining {len(query.names)} predicates; "
                        f"at most {limits.max_query_predicates}"
                    )
                if len(query.ops) > limits.max_query_ops:
                    raise InvalidTokenError(
                        f"{where} has a check of {len(query.ops)} operations; at most {limits.max_query_ops}"
                    )
                for op in query.ops:
                    if op in _FORBIDDEN_OPS:
                        raise InvalidTokenError(f"{where} has a check using {_FORBIDDEN_OPS[op]}")
    work = _work(blocks)
    if work > limits.max_work:
        raise InvalidTokenError(f"chit checks would cost about {work} units of work; at most {limits.max_work}")


def _work(blocks: Sequence[Block]) -> int:
    """The estimated work of every check of the appended blocks: per alternative, ``QUERY_COST`` plus, per
    combination of facts its predicates may match, 1 + its operations and literal elements. A predicate may
    match the authority's facts of its name, the ambient facts of its name, and any appended fact of its
    name (whatever the scope: an over-estimate)."""
    visible: Counter[str] = Counter(AMBIENT_FACTS)
    for block in blocks:
        visible.update(fact.name for fact in block.facts)
    total = 0
    for block in blocks[1:]:
        for check in block.checks:
            for query in check.queries:
                combinations = 1
                for name in query.names:
                    combinations *= visible[name]
                total += QUERY_COST + combinations * (1 + query.units)
    return total


# --- attenuation --------------------------------------------------------------------------------------


def restriction(
    *,
    operations: Collection[str] | None = None,
    service: str | Collection[str] | None = None,
    resource: str | Collection[str] | None = None,
    method: str | None = None,
    path: str | None = None,
    exact_path: str | None = None,
    expires_at: int | None = None,
    datalog: str | None = None,
) -> Any:
    """The block that restricts a chit as asked (a ``biscuit_auth.BlockBuilder``); ``ValueError`` for nothing
    to restrict or datalog that does not parse. Every argument only adds checks:

    * ``operations``: ``check all operation($op), {ops}.contains($op)`` (every operation the request
      exercises is one of them) and a ``service`` check for the services they name;
    * ``service``: ``check if service("payment")`` (several: ``check if service($v), {...}.contains($v)``);
    * ``resource``: ``check if resource("img-7")`` (several: likewise);
    * ``method``: ``check if method("GET")``; ``path``: ``check if path("/images/7")``, or with a final ``*``
      a prefix, ``check if path($p), $p.starts_with("/images/")``; ``exact_path``: ``check if path(...)`` of
      that one path, a final ``*`` included (a request's own path, which may end in one). Paths are the
      ``path`` fact's form: percent-decoded, as the router matches them (``/docs/a?b`` for ``/docs/a%3Fb``);
    * ``expires_at`` (epoch seconds): ``check if time($t), $t <= <then>``;
    * ``datalog``: checks (and facts) as written, bounded like any appended block.
    """
    block = biscuit_auth.BlockBuilder("")
    added = False
    if operations is not None:
        wanted = _names("operations", operations)
        block.add_check(_operations_check(wanted))
        block.add_check(_one_of("service", frozenset(operation.split(":", 1)[0] for operation in wanted)))
        added = True
    for name, value in (("service", service), ("resource", resource)):
        if value is not None:
            block.add_check(_one_of(name, _names(name, [value] if isinstance(value, str) else value)))
            added = True
    if method is not None:
        block.add_check(_check("check if method({v})", _text("method", method).upper()))
        added = True
    if path is not None:
        _text("path", path)
        if path.endswith(WILDCARD):
            block.add_check(_check("check if path($p), $p.starts_with({v})", path[:-1]))
        else:
            block.add_check(_check("check if path({v})", path))
        added = True
    if exact_path is not None:
        block.add_check(_check("check if path({v})", _text("path", exact_path)))
        added = True
    if expires_at is not None:
        then = datetime.fromtimestamp(int(expires_at), UTC)
        block.add_check(biscuit_auth.Check("check if time($t), $t <= {then}", {"then": then}))
        added = True
    if datalog is not None:
        try:
            block.add_code(_text("datalog", datalog))
        except biscuit_auth.DataLogError as exc:
            raise ValueError(f"datalog does not parse: {str(exc)[:300]}") from exc
        added = True
    if not added:
        raise ValueError("nothing to restrict: give operations, service, resource, method, path, ttl or datalog")
    return block


# Parsing a check costs tens of µs; a service attenuates for the same few targets again and again, so the
# checks ``restriction`` builds are parsed once per value (the binding copies a check into each block).


@functools.lru_cache(maxsize=1024)
def _operations_check(operations: frozenset[str]) -> Any:
    return biscuit_auth.Check("check all operation($op), {ops}.contains($op)", {"ops": set(operations)})


@functools.lru_cache(maxsize=1024)
def _one_of(name: str, values: frozenset[str]) -> Any:
    """``check if name("v")``, or for several values ``check if name($v), {...}.contains($v)``."""
    if len(values) == 1:
        return biscuit_auth.Check(f"check if {name}({{v}})", {"v": next(iter(values))})
    return biscuit_auth.Check(f"check if {name}($v), {{vs}}.contains($v)", {"vs": set(values)})


@functools.lru_cache(maxsize=1024)
def _check(source: str, value: str) -> Any:
    """A check of ``source`` with its one parameter ``{v}`` bound to ``value``."""
    return biscuit_auth.Check(source, {"v": value})


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _names(name: str, values: Iterable[object]) -> frozenset[str]:
    names = frozenset(_text(name, value) for value in values)
    if not names or len(names) > MAX_RESTRICTION_VALUES:
        raise ValueError(f"{name} must name between 1 and {MAX_RESTRICTION_VALUES}")
    return names


def parse_for_attenuation(token: str, keys: Callable[[int | None], Sequence[Any]]) -> Any:
    """A chit's ``Biscuit`` for appending to (the binding re-serializes only what it verified); ``ValueError``
    when no key ``keys(root_key_id)`` gives verifies it."""
    try:
        raw = _decode(token)
        shape = outline(raw)
        return _verified(raw, keys(shape.root_key_id))
    except (InvalidTokenError, MalformedChitError) as exc:
        reason = exc.reason if isinstance(exc, InvalidTokenError) else str(exc)
        raise ValueError(f"cannot attenuate: {reason} (no root key known here verifies it)") from exc


def service_public_key(private_key: str) -> str:
    """The public half (``ed25519/<hex>``) of a service's private key ``ed25519-private/<hex>``; ``ValueError``
    for anything else."""
    return str(biscuit_auth.KeyPair.from_private_key(_private_key(private_key)).public_key)


def _private_key(text: str) -> Any:
    if not isinstance(text, str) or not text.startswith("ed25519-private/"):
        raise ValueError("a service key is ed25519-private/<hex>")
    try:
        return biscuit_auth.PrivateKey(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError("a service key is ed25519-private/<hex>") from exc


def _vouched(biscuit: Any, service_id: str, private_key: str) -> Any:
    """``biscuit`` with a third-party block ``through("<service_id>")`` signed with ``private_key``."""
    key = _private_key(private_key)
    public = biscuit_auth.KeyPair.from_private_key(key).public_key
    statement = biscuit_auth.BlockBuilder(f"{THROUGH}({{s}})", {"s": _text("service id", service_id)})
    block = biscuit.third_party_request().create_block(key, statement)  # a fresh request: used once
    return biscuit.append_third_party(public, block)


def append(
    biscuit: Any,
    block: Any | None,
    limits: ChitLimits = DEFAULT_LIMITS,
    *,
    checked: bool = True,
    through: tuple[str, str] | None = None,
) -> str:
    """The chit with ``block`` appended (None: none) and, with ``through`` = (service id, private service key),
    then a third-party block ``through("<service id>")`` signed with that key; ``ValueError`` when a verifier
    with ``limits`` would refuse it. ``checked=False`` skips the bounds of appended blocks (not size and
    block count): for blocks built by ``restriction`` without ``datalog``, within them by construction."""
    if block is None and through is None:
        raise ValueError("nothing to append")
    try:
        attenuated = biscuit if block is None else biscuit.append(block)
        if through is not None:
            attenuated = _vouched(attenuated, *through)
    except _TOKEN_ERRORS as exc:
        raise ValueError(f"cannot attenuate: {exc}") from exc
    except BaseException as exc:
        _unless_panic(exc)
        raise ValueError("cannot attenuate: the biscuit binding failed") from None
    token = str(attenuated.to_base64())
    problem: str | None = None
    if len(token) > limits.max_size:
        problem = f"it would be larger than {limits.max_size} bytes"
    elif attenuated.block_count() > limits.max_blocks:
        problem = f"it would have more than {limits.max_blocks} blocks"
    elif checked:
        try:
            restrict(read_blocks(attenuated.to_bytes()), limits)
        except (InvalidTokenError, MalformedChitError) as exc:
            problem = exc.reason if isinstance(exc, InvalidTokenError) else str(exc)
    if problem is not None:
        raise ValueError(f"the attenuated chit would be refused: {problem}")
    return token


# --- minting (the auth server's vocabulary; for tests and the test kit) -------------------------------


def new_root_key() -> tuple[str, str]:
    """A new Ed25519 root key: (``ed25519-private/<hex>``, a secret; ``ed25519/<hex>``)."""
    pair = biscuit_auth.KeyPair()
    return str(pair.private_key), str(pair.public_key)


def mint(
    private_key: str,
    root_key_id: int | None,
    *,
    issuer: str,
    subject: str,
    client_id: str,
    permissions: Iterable[str],
    actors: Sequence[tuple[str, str]] = (),
    expires_at: int,
    datalog: str | None = None,
    session_id: str | None = None,
) -> str:
    """A chit in the vocabulary above, as the auth server mints it; ``datalog`` adds to the authority block
    (tests of what a misbehaving issuer could sign). Every value goes in as a parameter, never as text."""
    lines = ["issuer({iss});", "subject({sub});", "client({client});"]
    values: dict[str, Any] = {"iss": issuer, "sub": subject, "client": client_id}
    for index, permission in enumerate(sorted(set(permissions))):
        if WILDCARD in permission.split(":"):
            raise ValueError(f"{permission}: a chit never carries a permission with a '*' segment")
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
    if datalog is not None:
        builder.add_code(datalog)
    if root_key_id is not None:
        builder.set_root_key_id(root_key_id)
    return str(builder.build(biscuit_auth.PrivateKey(private_key)).to_base64())


# --- a chit in a request ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChitRequest:
    """A verified chit with what the service knows of the request so far: what ``Principal`` decisions
    evaluate the chit's checks with (``chit.policy.principals.ChitChecks``)."""

    chit: VerifiedChit
    authorizer: ChitAuthorizer
    clock: Callable[[], float]
    operations: tuple[str, ...] = ()
    method: str | None = None
    path: str | None = None
    pending: tuple[str, ...] = ()  # checks left by the dependency for the route body
    # (operations, method, path) -> (moment, bound request, refusal): the outcome of ``at_request`` at one
    # moment (``VerifiedChit.moment``), shared by the requests bound from one verified chit (bounded: emptied
    # when full)
    bound: dict[tuple[Any, ...], tuple[int, ChitRequest, str | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def revocation_ids(self) -> tuple[str, ...]:
        return self.chit.revocation_ids

    @property
    def biscuit(self) -> Any:
        return self.chit.biscuit

    @property
    def plain(self) -> bool:
        return self.chit.plain

    def failure(
        self, operations: Sequence[str] = (), *, resource: str | None = None, owner: str | None = None
    ) -> str | None:
        """Why the chit refuses a decision of the route body (every check evaluated), or None."""
        if self.chit.plain:
            return None
        asked = tuple(dict.fromkeys((*self.operations, *operations)))
        outcome = self.authorizer.evaluate(
            self.chit,
            now=self.clock(),
            operations=asked,
            method=self.method,
            path=self.path,
            resource=resource,
            owner=owner,
        )
        return outcome.refusal

    def at_request(
        self, operations: Sequence[str], method: str | None = None, path: str | None = None
    ) -> tuple[ChitRequest, str | None]:
        """This chit bound to a request, and why it is refused there (None: allowed, maybe pending)."""
        if self.chit.plain:
            return self, None  # decided without datalog: the request's facts are not needed
        operations = tuple(operations)
        second = int(self.clock())
        moment = self.chit.moment(second)
        key = (operations, method, path)
        memo = self.bound
        known = memo.get(key)
        if known is not None and known[0] == moment:
            return known[1], known[2]  # the same facts at the same moment: the same outcome
        defer = BODY_PREDICATES if operations else BODY_PREDICATES | {"operation"}
        outcome = self.authorizer.evaluate(
            self.chit, now=second, operations=operations, method=method, path=path, defer=defer
        )
        pending = () if outcome.refusal is not None else outcome.pending
        bound = ChitRequest(self.chit, self.authorizer, self.clock, operations, method, path, pending, memo)
        if len(memo) >= MAX_BOUND_REQUESTS:
            memo.clear()
        memo[key] = (moment, bound, outcome.refusal)
        return bound, outcome.refusal
