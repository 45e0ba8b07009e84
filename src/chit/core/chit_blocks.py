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

One reading only. Whoever holds a chit holds the key that signs the next block, so appended blocks are
bytes of anyone's choosing, and protobuf decoders differ on a field meant to occur once that occurs twice
(prost, the binding's decoder, keeps the last scalar, merges two messages into one, concatenating their
repeated fields, and merges or replaces a oneof's member). So wherever this module reads, a singular field
that occurs more than once is refused: the token's root key id and authority block, a signed block's
fields, a block's context and version, a fact's predicate, a predicate's name, a check's kind, a rule's
head, a term's value and an operation's member (a oneof: exactly one member), an operation's kind and
extern name, a map entry's key and value. An enum beyond int32 is refused too (prost keeps its low 32
bits, so ``2**32 + 8`` is a regular expression to the binding). The binding never writes such bytes.
Unknown field numbers are skipped, as prost skips them, in the token, signed blocks, blocks, facts,
checks, rules, unary and binary operations, literals and map entries: both decoders then read the same;
in predicates, terms, expressions and operations they are refused. Parts no bound depends on are not
decoded: a rule's scopes (the work estimate counts every fact, whatever the scope), a block's public
keys, the terms of a check's body predicates (only their names are counted, every field walked).
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
_INT32 = 1 << 31

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
    try:
        root_key_id, _, blocks = _container(raw)
    except IndexError as exc:
        raise MalformedChitError("not a Biscuit token") from exc
    return Outline(root_key_id, 1 + len(blocks))


def read_blocks(raw: bytes) -> tuple[Block, ...]:
    """Every block of a token, the authority block first. ``raw`` must be the bytes the binding verified
    (``Biscuit.to_bytes()``), so that what is read here is what the binding evaluates."""
    try:
        _, authority, appended = _container(raw)
        signed = [_signed_block(raw, start, end) for _, start, end in (authority, *appended)]
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


def _container(raw: bytes) -> tuple[int | None, _Field, list[_Field]]:
    """The root key id, the authority block and the appended blocks of a token (a ``Biscuit`` message)."""
    root_key_id: int | None = None
    authority: _Field | None = None
    appended: list[_Field] = []
    seen = 0  # a bit per singular field met: rootKeyId (1), authority (2), proof (4)
    for field in _fields(raw, 0, len(raw)):
        number = field[0]
        if number == 3:
            appended.append(field)
            continue
        if number in (1, 2, 4):
            if seen & (1 << number):
                raise MalformedChitError(f"not a Biscuit token: field {number} occurs twice")
            seen |= 1 << number
        if number == 1 and field[2] < 0:
            root_key_id = field[1]
        elif number == 2:
            authority = field
    if authority is None:
        raise MalformedChitError("not a Biscuit token: no authority block")
    return root_key_id, authority, appended


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
            if result >= _UINT64:  # past 64 bits (a tenth byte above 1): prost refuses it too
                raise MalformedChitError("varint too long")
            return result, i
        shift += 7
        if shift > _MAX_SHIFT:
            raise MalformedChitError("varint too long")


def _text(buf: bytes, start: int, end: int) -> str:
    if end < 0:
        raise MalformedChitError("expected a string")
    return buf[start:end].decode("utf-8")


def _enum(value: int) -> int:
    """An enum's varint as an int32 holds it; prost keeps the low 32 bits of larger ones, so they are refused."""
    if value >= _INT32:
        raise MalformedChitError(f"enum value {value} out of range")
    return value


def _signed_block(buf: bytes, start: int, end: int) -> tuple[int, int, bool]:
    if end < 0:
        raise MalformedChitError("expected a signed block")
    block: tuple[int, int] | None = None
    third_party = False
    seen = 0  # every field of a SignedBlock (1-5) is singular
    for number, s, e in _fields(buf, start, end):
        if 0 < number <= 5:
            if seen & (1 << number):
                raise MalformedChitError(f"a signed block has field {number} twice")
            seen |= 1 << number
        if number == 1 and e >= 0:
            block = (s, e)
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
        seen = 0  # a bit per singular field met: context (2), version (3)
        for number, start, end in fields:
            if number == 4:
                facts.append(self.fact(start, end))
            elif number == 5:
                rules += 1
            elif number == 6:
                checks.append(self.check(start, end))
            elif number in (2, 3):
                if seen & (1 << number):
                    raise MalformedChitError(f"a block has field {number} twice")
                seen |= 1 << number
        return Block(tuple(facts), rules, tuple(checks), third_party)

    def fact(self, start: int, end: int) -> Predicate:
        buf = self.buf
        if end - start > 2 and buf[start] == 0x0A and buf[start + 1] < 0x80 and buf[start + 1] == end - start - 2:
            return self.predicate(start + 2, end)  # the common case: one short predicate, and nothing else
        predicate: tuple[int, int] | None = None
        for number, s, e in self.fields(start, end):
            if number == 1:
                if predicate is not None:  # prost would merge the two into one predicate
                    raise MalformedChitError("a fact has two predicates")
                predicate = (s, e)
        if predicate is None:
            raise MalformedChitError("a fact has no predicate")
        return self.predicate(*predicate)

    def check(self, start: int, end: int) -> Check:
        kind = CHECK_ONE
        kinds = 0
        queries: list[Query] = []
        for number, s, e in self.fields(start, end):
            if number == 1:
                queries.append(self.query(s, e))
            elif number == 2 and e < 0:
                kinds += 1
                kind = _enum(s)
        if kinds > 1:
            raise MalformedChitError("a check has two kinds")
        return Check(kind, tuple(queries), frozenset(name for query in queries for name in query.names))

    def query(self, start: int, end: int) -> Query:
        names: list[str] = []
        ops: list[int] = []
        values: list[Term] = []
        units = 0
        heads = expressions = 0
        for number, s, e in self.fields(start, end):
            if number == 2:
                names.append(self.name(s, e))
            elif number == 3:
                expressions += 1
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
            elif number == 1:
                heads += 1  # not read (no bound depends on a check's head), but singular like any other
        if heads > 1:
            raise MalformedChitError("a rule has two heads")
        expiry = None
        # one expression: the same operations split over two are evaluated apart, and are no comparison
        if expressions == 1 and ops == [VALUE, VALUE, BINARY + BINARY_LESS_OR_EQUAL]:
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
        if len(member) != 1:  # a oneof: prost would merge or replace members, so exactly one is read
            raise MalformedChitError("an operation holds no member or more than one")
        number, s, e = member[0]
        if number == 1:
            return VALUE, self.term(s, e)
        if number in (2, 3):  # OpUnary, OpBinary: kind (1), ffiName (2), each at most once
            kind = -1
            seen = 0
            for n, value, flag in self.fields(s, e):
                if n in (1, 2):
                    if seen & (1 << n):
                        raise MalformedChitError(f"an operation has field {n} twice")
                    seen |= 1 << n
                    if n == 1 and flag < 0:
                        kind = _enum(value)
            if kind < 0:
                raise MalformedChitError("an operation has no kind")
            return (UNARY if number == 2 else BINARY) + min(kind, 99), None
        if number == 4:
            return CLOSURE, None
        raise MalformedChitError(f"unexpected operation field {number}")

    def name(self, start: int, end: int) -> str:
        """The name of a body predicate. Its terms are stepped over, not read (no bound depends on them), but
        every field is: a second name hidden among them is what prost would read."""
        buf = self.buf
        index = -1
        i = start
        while i < end:
            key = buf[i]
            value = buf[i + 1]
            i += 2
            if value & 0x80:
                value, i = _varint_rest(buf, i, value)
            if key == 0x12:  # a term: length-delimited
                i += value
            elif key == 0x08:  # the name: a varint symbol
                if index >= 0:
                    raise MalformedChitError("a predicate has two names")
                index = value
            else:
                raise MalformedChitError(f"unexpected predicate field {key}")
        if index < 0 or i != end:
            raise MalformedChitError("a predicate has no name")
        return self.symbol(index)

    def predicate(self, start: int, end: int) -> Predicate:
        # inlined: every fact of a chit not yet cached goes through here
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
                if name is not None:  # prost keeps the last
                    raise MalformedChitError("a predicate has two names")
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
        member = self.fields(start, end)
        if len(member) != 1:  # a oneof: prost would merge or replace members, so exactly one is read
            raise MalformedChitError("a term holds no value or more than one")
        number, s, e = member[0]
        if e < 0:
            if number == 3:
                return self.symbol(s)
            if number == 2:
                return s - _UINT64 if s >= _INT64_SIGN else s
            if number == 1:
                return Variable(self.symbol(s))
            if number == 4:
                return Date(s)
            if number == 6:
                return bool(s)
        elif number == 5:
            return self.buf[s:e]
        elif number in (7, 9, 10):
            return Container(self.size(s, e, number))
        elif number == 8:
            return None
        raise MalformedChitError(f"unexpected term field {number}")

    def size(self, start: int, end: int, kind: int) -> int:
        """Elements of a set (7), array (9) or map (10) literal, those of nested literals included."""
        size = 0
        for number, s, e in self.fields(start, end):
            if number != 1:
                continue  # unknown to the schema: skipped, as prost skips it
            size += 1
            if kind == 10:  # a map entry: its value is the term
                s, e = self.entry(s, e)
            member = self.fields(s, e)
            if len(member) != 1:  # a oneof, as in term()
                raise MalformedChitError("a term holds no value or more than one")
            inner, ns, ne = member[0]
            if inner in (7, 9, 10):
                size += self.size(ns, ne, inner)
        return size

    def entry(self, start: int, end: int) -> tuple[int, int]:
        """Where a map entry's value is; its key (a oneof too) adds no work, but it and the value occur once."""
        value: tuple[int, int] | None = None
        keys = 0
        for number, s, e in self.fields(start, end):
            if number == 1:
                keys += 1
                if keys > 1 or len(self.fields(s, e)) != 1:
                    raise MalformedChitError("a map entry has no single key")
            elif number == 2:
                if value is not None:
                    raise MalformedChitError("a map entry has two values")
                value = (s, e)
        if value is None:
            raise MalformedChitError("a map entry has no value")
        return value
