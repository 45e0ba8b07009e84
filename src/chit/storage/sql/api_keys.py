"""API keys of bots, stored hashed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, update

from chit.errors import NotFoundError
from chit.storage import tables as t
from chit.storage.records import (
    ApiKeyRecord,
)
from chit.storage.sql.connection import Connected, _join


def _api_key(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        row.id,
        row.owner_id,
        row.secret_hash,
        frozenset(row.scope.split()),
        row.created_at,
        row.expires_at,
        row.last_used_at,
        row.revoked_at,
    )


class ApiKeys(Connected):
    def create_api_key(
        self,
        *,
        key_id: str,
        owner_id: str,
        secret_hash: str,
        scope: Iterable[str],
        now: int,
        expires_at: int | None,
    ) -> ApiKeyRecord:
        record = ApiKeyRecord(key_id, owner_id, secret_hash, frozenset(scope), now, expires_at, None, None)
        with self._write() as conn:
            conn.execute(
                insert(t.api_keys).values(
                    id=key_id,
                    owner_id=owner_id,
                    secret_hash=secret_hash,
                    scope=_join(record.scope),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return record

    def api_key(self, key_id: str) -> ApiKeyRecord | None:
        with self._read() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return None if row is None else _api_key(row)

    def api_keys(self, owner_id: str | None = None) -> list[ApiKeyRecord]:
        query = select(t.api_keys).order_by(t.api_keys.c.created_at, t.api_keys.c.id)
        if owner_id is not None:
            query = query.where(t.api_keys.c.owner_id == owner_id)
        with self._read() as conn:
            return [_api_key(r) for r in conn.execute(query)]

    def revoke_api_key(self, key_id: str, now: int) -> bool:
        with self._write() as conn:
            if conn.scalar(select(t.api_keys.c.id).where(t.api_keys.c.id == key_id)) is None:
                raise NotFoundError(f"no API key {key_id!r}")
            result = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            return result.rowcount == 1

    def rotate_api_key(self, key_id: str, secret_hash: str) -> None:
        with self._write() as conn:
            result = conn.execute(
                update(t.api_keys)
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(secret_hash=secret_hash)
            )
            if result.rowcount != 1:
                raise NotFoundError(f"no active API key {key_id!r}")

    def touch_api_key(self, key_id: str, now: int) -> None:
        with self._write() as conn:
            conn.execute(update(t.api_keys).where(t.api_keys.c.id == key_id).values(last_used_at=now))
