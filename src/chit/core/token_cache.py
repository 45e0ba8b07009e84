"""The verified-token cache: a token that verified once is not verified again until it expires.

What it keeps of a token is its user's choice: the SDK's verifier keeps the principal of a JWT or a
chit, the auth server the claims of its own access tokens presented back to it (a subject token).

Keyed by the whole token itself (hashed by the dictionary, compared in full: a digest could collide,
the token cannot), bounded in entries and in bytes, oldest entries evicted first.
An entry answers only until the instant fresh verification would start refusing the token (a JWT's
``exp`` plus the leeway; a chit's earliest expiry check, to the second). Revocation is not stored here:
whoever reads the cache asks its revocation check on every hit.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class VerifiedTokenCache(Generic[V]):
    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a cache needs room for at least one token")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: dict[str, tuple[V, float]] = {}
        self._bytes = 0
        self._lock = threading.Lock()  # only writers take it; reads are one dict lookup

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> V | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if now < entry[1]:
            return entry[0]
        self.discard(token)
        return None

    def put(self, token: str, value: V, valid_until: float) -> None:
        size = len(token)
        if size > self.max_bytes:
            return
        with self._lock:
            if token in self._entries:
                return
            while self._entries and (len(self._entries) >= self.max_entries or self._bytes + size > self.max_bytes):
                oldest = next(iter(self._entries))
                del self._entries[oldest]
                self._bytes -= len(oldest)
            self._entries[token] = (value, valid_until)
            self._bytes += size

    def discard(self, token: str) -> None:
        with self._lock:
            if self._entries.pop(token, None) is not None:
                self._bytes -= len(token)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
