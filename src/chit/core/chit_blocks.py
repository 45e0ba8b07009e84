"""What the blocks of a chit hold, read from the token's bytes (Biscuit v3, ``schema.proto``).

biscuit-python prints a block (``block_source``) without escaping the quotes inside its strings, so a
block can be written whose printed text reads as another block: a three-way join can print as a
single predicate, a client id can print as an extra ``right``. What decides (the authority block's
vocabulary, the bounds put on appended blocks by ``chit.core.chit_authorizer``) is therefore read
here, from the signed bytes the binding itself evaluates, never from the printed text.

Only what those need is decoded: facts with their terms, the number of rules, and each check's
queries (body predicates, expression operations). Symbols resolve as the format defines them: the
default table, then the token's table (the authority's symbols followed by each first-party block's);
a third-party block has a table of its own. Anything that does not decode is ``MalformedChitError``.
The decoder works on offsets into one buffer, without slicing: it runs on every chit not yet cached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import NamedTuple

# The symbols every Biscuit implementation knows without a token naming them (indexes 0-27).
DEFAULT_SYMBOLS = (
    "read", "write", "resource", "operation", "right", "time", "role", "owner", "tenant", "namespace", "user",
    "team", "service", "admin", "email", "group", "member", "ip_address", "client", "client_ip", "domain",
    "path", "version", "cluster", "node", "hostname", "nonce", "query",
)  # fmt: skip
SYMBOL_OFFSET = 1024  # a token's own symbols are numbered from here
STRING_UNIT = 64  # bytes of a string literal that count as one unit of work
_INT64_SIGN = 1 << 63
_UINT64 = 1 << 64
_MAX_SHIFT = 63

# OpUnary / OpBinary kinds of schema.proto that the bounds look for
UNARY_FFI = 4
BINARY_LESS_OR_EQUAL = 2
BINARY_REGEX = 8
BINARY_ALL = 25
BINARY_ANY = 26
BINARY_FFI = 28
CHECK_ONE, CHECK_ALL, CHECK_REJECT = 0, 1, 2
VALUE, UNARY, BINARY, CLOSURE = 0, 100, 200, 300  # Query.ops: UNARY + kind, BINARY + kind


class MalformedChitError(ValueError):
    """Bytes that are not a Biscuit v3 token as ``schema.proto`` describes it."""


@dataclass(frozen=True, slots=True)
class Date:
    """A datalog date: seconds since the epoch, UTC."""

    seconds: int


@dataclass(frozen=True, slots=True)
class Variable:
    name: str


@dataclass(frozen=True, slots=True)
class Container:
    """A set, array or map literal; only its size matters here (nested literals' elements included)."""

    size: int


Term = str | int | bool | bytes | Date | Variable | Container | None


class Predicate(NamedTuple):
    name: str
    terms: tuple[Term, ...]


class Query(NamedTuple):
    """One body of a check (``check if a or b`` has two): predicates joined, then expressions evaluated."""

    names: tuple[str, ...]  # of the body predicates, in order
    ops: tuple[int, ...]  # each expression operation: VALUE, UNARY + kind, BINARY + kind or CLOSURE
    expiry: int | None  # the date of an expression that is exactly ``$variable <= <date>``, else None
    units: int  # the work of one evaluation: operations + literal elements + string bytes / STRING_UNIT


class Check(NamedTuple):
    kind: int  # CHECK_ONE (check if), CHECK_ALL (check all), CHECK_REJECT (reject if)
    queries: tuple[Query, ...]
    names: frozenset[str]  # of every query's body predicates: read on every chit verified, so kept

    @property
    def expiry(self) -> int | None:
        """The date of an expiry check, ``check if time($t), $t <= <date>`` exactly; None for any other."""
        if self.kind != CHECK_ONE or len(self.queries) != 1 or self.queries[0].names != ("time",):
            return None
        return self.queries[0].expiry


class Block(NamedTuple):
    facts: tuple[Predicate, ...]
    rules: int
    checks: tuple[Check, ...]
    third_party: bool


class Outline(NamedTuple):
    """What the container says before any signature is checked."""

    root_key_id: int | None
    blocks: int  # the authority block included


# (field number, start, end) of a length-delimited field, or (field number, value, -1) of a varint
_Field = tuple[int, int, int]


def outline(raw: bytes) -> Outline:
    """The root key id and block count of a token's bytes (cheap: nothing inside a block is decoded)."""
    root_key_id: int | None = None
    blocks = 0
    authority = False
    try:
        fields = _fields(raw, 0, len(raw))
    except IndexError as exc:
        raise MalformedChitError("not a Biscuit token") from exc
    for number, start, end in fields:
        if number == 1 and end < 0:
            root_key_id = start
        elif number == 2:
            authority = True
            blocks += 1
        elif number == 3:
            blocks += 1
    if not authority:
        raise MalformedChitError("not a Biscuit token: no authority block")
    return Outline(root_key_id, blocks)


def read_blocks(raw: bytes) -> tuple[Block, ...]:
    """Every block of a token, the authority block first. ``raw`` must be the bytes the binding verified
    (``Biscuit.to_bytes()``), so that what is read here is what the binding evaluates."""
    try:
        signed = [
            _signed_block(raw, start, end) for number, start, end in _fields(raw, 0, len(raw)) if number in (2, 3)
        ]
        table: tuple[str, ...] = ()  # the token's symbols so far (first-party blocks')
        blocks: list[Block] = []
        for start, end, third_party in signed:
            data = raw[start:end]
            key = (data, True, ()) if third_party else (data, False, table)
            known = _READ.get(key)
            if known is None:
                known = _read_block(data, third_party, table)
                with _READ_LOCK:  # chits are verified in threads too
                    if len(_READ) >= MAX_REMEMBERED_BLOCKS:
                        _READ.pop(next(iter(_READ)), None)  # the oldest
                    _READ[key] = known
            block, own = known
            if not third_party:
                table = (*table, *own)  # a first-party block sees the symbols up to its own, not later ones
            blocks.append(block)
    except (IndexError, ValueError, RecursionError) as exc:
        if isinstance(exc, MalformedChitError):
            raise
        raise MalformedChitError("a block of the token does not decode") from exc
    return tuple(blocks)


# What a block's bytes decode to, with the symbol table they were read under (a block's own symbols extend
# the table of the first-party blocks after it): the same bytes under the same table always read the same,
# so blocks shared by many chits (the authority block, the first hops' attenuations) are read once.
MAX_REMEMBERED_BLOCKS = 4096  # blocks of a few hundred bytes each: about 2 MiB held at most
_READ: dict[tuple[bytes, bool, tuple[str, ...]], tuple[Block, tuple[str, ...]]] = {}
_READ_LOCK = threading.Lock()


def forget_blocks() -> None:
    """Empty the memo of blocks already read (for measurements and tests)."""
    with _READ_LOCK:
        _READ.clear()


def _read_block(data: bytes, third_party: bool, table: tuple[str, ...]) -> tuple[Block, tuple[str, ...]]:
    """One block read from its bytes, and the symbols it defines. ``table``: the token's symbols before it."""
    fields = _fields(data, 0, len(data))
    own = tuple(_text(data, s, e) for number, s, e in fields if number == 1)
    symbols = [*DEFAULT_SYMBOLS, *own] if third_party else [*DEFAULT_SYMBOLS, *table, *own]
    return _Reader(data, symbols).block(fields, third_party), own


# --- Protocol Buffers, the little of it a Biscuit needs ---------------------------------------------------


def _fields(buf: bytes, i: int, end: int) -> list[_Field]:
    """The fields of the message in ``buf[i:end]``; only the varint and length-delimited wire types occur."""
    out: list[_Field] = []
    while i < end:
        key = buf[i]
        i += 1
        if key & 0x80:
            key, i = _varint_rest(buf, i, key)
        wire = key & 7
        if wire > 2 or wire == 1:
            raise MalformedChitError(f"unexpected wire type {wire}")
        value = buf[i]
        i += 1
        if value & 0x80:
            value, i = _varint_rest(buf, i, value)
        if wire == 2:
            out.append((key >> 3, i, i + value))
            i += value
        else:
            out.append((key >> 3, value, -1))
    if i != end:
        raise MalformedChitError("a field runs past the end of its message")
    return out


def _varint_rest(buf: bytes, i: int, first: int) -> tuple[int, int]:
    result = first & 0x7F
    shift = 7
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
        if shift > _MAX_SHIFT:
            raise MalformedChitError("varint too long")


def _text(buf: bytes, start: int, end: int) -> str:
    if end < 0:
        raise MalformedChitError("expected a string")
    return buf[start:end].decode("utf-8")


def _signed_block(buf: bytes, start: int, end: int) -> tuple[int, int, bool]:
    if end < 0:
        raise MalformedChitError("expected a signed block")
    block: tuple[int, int] | None = None
    third_party = False
    for number, s, e in _fields(buf, start, end):
        if number == 1 and e >= 0:
            block = (s, e)  # a singular field: the last occurrence wins, as in every decoder
        elif number == 4:
            third_party = True
    if block is None:
        raise MalformedChitError("a signed block has no block")
    return block[0], block[1], third_party


class _Reader:
    def __init__(self, buf: bytes, symbols: list[str]) -> None:
        self.buf = buf
        self.symbols = symbols

    def symbol(self, index: int) -> str:
        if index < len(DEFAULT_SYMBOLS):
            return DEFAULT_SYMBOLS[index]
        position = index - SYMBOL_OFFSET + len(DEFAULT_SYMBOLS)
        if index < SYMBOL_OFFSET or position >= len(self.symbols):
            raise MalformedChitError(f"unknown symbol {index}")
        return self.symbols[position]

    def fields(self, start: int, end: int) -> list[_Field]:
        if end < 0:
            raise MalformedChitError("expected a message")
        return _fields(self.buf, start, end)

    def block(self, fields: list[_Field], third_party: bool) -> Block:
        facts: list[Predicate] = []
        checks: list[Check] = []
        rules = 0
        for number, start, end in fields:
            if number == 4:
                facts.append(self.fact(start, end))
            elif number == 5:
                rules += 1
            elif number == 6:
                checks.append(self.check(start, end))
        return Block(tuple(facts), rules, tuple(checks), third_party)

    def fact(self, start: int, end: int) -> Predicate:
        buf = self.buf
        if end - start > 2 and buf[start] == 0x0A and buf[start + 1] == end - start - 2:
            return self.predicate(start + 2, end)  # the common case: one short predicate
        predicate = [self.predicate(s, e) for n, s, e in self.fields(start, end) if n == 1]
        if not predicate:
            raise MalformedChitError("a fact has no predicate")
        return predicate[-1]

    def check(self, start: int, end: int) -> Check:
        kind = CHECK_ONE
        queries: list[Query] = []
        for number, s, e in self.fields(start, end):
            if number == 1:
                queries.append(self.query(s, e))
            elif number == 2 and e < 0:
                kind = s
        return Check(kind, tuple(queries), frozenset(name for query in queries for name in query.names))

    def query(self, start: int, end: int) -> Query:
        names: list[str] = []
        ops: list[int] = []
        values: list[Term] = []
        units = 0
        for number, s, e in self.fields(start, end):
            if number == 2:
                names.append(self.name(s, e))
            elif number == 3:
                for op_number, os, oe in self.fields(s, e):  # an ExpressionV2: its ops
                    if op_number != 1 or oe < 0:
                        raise MalformedChitError("an expression holds something else than operations")
                    code, term = self.op(os, oe)
                    ops.append(code)
                    units += 1
                    if code == VALUE:
                        values.append(term)
                    if isinstance(term, Container):
                        units += term.size
                    elif isinstance(term, str):
                        units += len(term) // STRING_UNIT
        expiry = None
        if ops == [VALUE, VALUE, BINARY + BINARY_LESS_OR_EQUAL]:
            variable, date = values
            if isinstance(variable, Variable) and isinstance(date, Date):
                expiry = date.seconds
        return Query(tuple(names), tuple(ops), expiry, units)

    def op(self, start: int, end: int) -> tuple[int, Term]:
        """An operation's code (VALUE, UNARY + kind, BINARY + kind, CLOSURE) and, for a value, its term."""
        buf = self.buf
        key, length = buf[start], buf[start + 1]
        if length < 0x80 and start + 2 + length == end:  # one member, the usual encoding
            if key in (0x12, 0x1A) and length == 2 and buf[start + 2] == 0x08 and buf[start + 3] < 0x80:
                return (UNARY if key == 0x12 else BINARY) + min(buf[start + 3], 99), None
            if key == 0x0A:
                return VALUE, self.term(start + 2, end)
        member = self.fields(start, end)
        if not member:
            raise MalformedChitError("an operation is empty")
        number, s, e = member[-1]  # a oneof: the last member present wins
        if number == 1:
            return VALUE, self.term(s, e)
        if number in (2, 3):
            kinds = [value for n, value, flag in self.fields(s, e) if n == 1 and flag < 0]
            if not kinds:
                raise MalformedChitError("an operation has no kind")
            return (UNARY if number == 2 else BINARY) + min(kinds[-1], 99), None
        if number == 4:
            return CLOSURE, None
        raise MalformedChitError(f"unexpected operation field {number}")

    def name(self, start: int, end: int) -> str:
        """The name of a body predicate (its terms are not needed)."""
        buf = self.buf
        if start + 1 < end and buf[start] == 0x08:
            value = buf[start + 1]
            if value < 0x80:
                return self.symbol(value)
            if start + 2 < end and buf[start + 2] < 0x80:
                return self.symbol((value & 0x7F) | (buf[start + 2] << 7))
        return self.predicate(start, end).name

    def predicate(self, start: int, end: int) -> Predicate:
        # inlined: every fact and every body predicate of a chit not yet cached goes through here
        buf = self.buf
        name: str | None = None
        terms: list[Term] = []
        i = start
        while i < end:
            key = buf[i]
            value = buf[i + 1]
            i += 2
            if value & 0x80:
                value, i = _varint_rest(buf, i, value)
            if key == 0x08:  # name: a varint symbol
                name = self.symbol(value)
            elif key == 0x12:  # a term: length-delimited
                if i + value > end:
                    raise MalformedChitError("a term runs past its predicate")
                terms.append(self.term(i, i + value))
                i += value
            else:
                raise MalformedChitError(f"unexpected predicate field {key}")
        if name is None or i != end:
            raise MalformedChitError("a predicate has no name")
        return Predicate(name, tuple(terms))

    def term(self, start: int, end: int) -> Term:
        buf = self.buf
        first = buf[start] if start < end else 0
        if first in (0x08, 0x18) and end - start <= 3:  # the common cases: a variable or a string, by symbol
            if end - start == 2 and buf[start + 1] < 0x80:
                symbol = self.symbol(buf[start + 1])
                return symbol if first == 0x18 else Variable(symbol)
            if end - start == 3 and buf[start + 1] >= 0x80 and buf[start + 2] < 0x80:
                symbol = self.symbol((buf[start + 1] & 0x7F) | (buf[start + 2] << 7))
                return symbol if first == 0x18 else Variable(symbol)
        term: Term = None
        for number, s, e in self.fields(start, end):  # a oneof: the last member present wins
            if number == 3 and e < 0:
                term = self.symbol(s)
            elif number == 2 and e < 0:
                term = s - _UINT64 if s >= _INT64_SIGN else s
            elif number == 1 and e < 0:
                term = Variable(self.symbol(s))
            elif number == 4 and e < 0:
                term = Date(s)
            elif number == 5 and e >= 0:
                term = self.buf[s:e]
            elif number == 6 and e < 0:
                term = bool(s)
            elif number in (7, 9, 10) and e >= 0:
                term = Container(self.size(s, e, number))
            elif number == 8:
                term = None
            else:
                raise MalformedChitError(f"unexpected term field {number}")
        return term

    def size(self, start: int, end: int, kind: int) -> int:
        """Elements of a set (7), array (9) or map (10) literal, those of nested literals included."""
        size = 0
        for number, s, e in self.fields(start, end):
            if number != 1:
                continue
            size += 1
            if kind == 10:  # a map entry: its value is the term
                values = [(vs, ve) for n, vs, ve in self.fields(s, e) if n == 2]
                if not values:
                    raise MalformedChitError("a map entry has no value")
                s, e = values[-1]
            for inner, ns, ne in self.fields(s, e):
                if inner in (7, 9, 10):
                    size += self.size(ns, ne, inner)
        return size
