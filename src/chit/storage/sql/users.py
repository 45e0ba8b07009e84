"""Users: accounts, looked up by id or by their username key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from chit.errors import ConflictError, NotFoundError, RefusedError
from chit.policy.usernames import USERNAME_RULE, is_valid_username, username_key
from chit.storage import tables as t
from chit.storage.records import (
    USER_ID_PREFIX,
    User,
    new_id,
)
from chit.storage.sql.grants import Grants


def _user(row: Row[Any]) -> User:
    return User(row.id, row.username, row.password_hash, bool(row.disabled), row.created_at, row.revoked_before)


_USER_BY_NAME = select(t.users).where(t.users.c.username_key == bindparam("username_key"))


class Users(Grants):
    def create_user(self, username: str, password_hash: str, now: int, roles: Iterable[str] = ()) -> User:
        if not is_valid_username(username):  # every stored key is ASCII: a non-ASCII name matches no one
            raise RefusedError(USERNAME_RULE)
        key = username_key(username)
        user = User(new_id(USER_ID_PREFIX), username, password_hash, False, now)
        try:
            with self._write() as conn:
                if conn.scalar(select(t.users.c.id).where(t.users.c.username_key == key)):
                    raise ConflictError(f"user {username!r} already exists")
                conn.execute(
                    insert(t.users).values(
                        id=user.id,
                        username=username,
                        username_key=key,
                        password_hash=password_hash,
                        disabled=False,
                        created_at=now,
                    )
                )
                self._grant_roles(conn, user.id, roles, now)
        except IntegrityError as exc:
            raise ConflictError(f"user {username!r} already exists") from exc
        return user

    def user_by_username(self, username: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(_USER_BY_NAME, {"username_key": username_key(username)}).first()
        return None if row is None else _user(row)

    def user_by_id(self, user_id: str) -> User | None:
        return self.remembered(("user", user_id), lambda: self._user_by_id(user_id))

    def _user_by_id(self, user_id: str) -> User | None:
        if self._sqlite:  # the subject of every token introspected or exchanged
            sql = "SELECT id, username, password_hash, disabled, created_at, revoked_before FROM users WHERE id = ?"
            rows = self._sqlite_rows(sql, (user_id,))
            if not rows:
                return None
            pk, username, password_hash, disabled, created_at, revoked_before = rows[0]
            return User(pk, username, password_hash, bool(disabled), created_at, revoked_before)
        with self._read() as conn:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).first()
        return None if row is None else _user(row)

    def set_user_disabled(self, username: str, disabled: bool, now: int) -> User:
        """Disabling also revokes everything issued to the user until now: enabling revives none of it."""
        key = username_key(username)
        values: dict[str, Any] = {"disabled": disabled}
        if disabled:
            values["revoked_before"] = now + 1  # whole seconds: what was issued in this second goes too
        with self._write() as conn:
            result = conn.execute(update(t.users).where(t.users.c.username_key == key).values(**values))
            if result.rowcount != 1:
                raise NotFoundError(f"no user {username!r}")
            row = conn.execute(select(t.users).where(t.users.c.username_key == key)).one()
        return _user(row)

    def revoke_user_tokens(self, username: str, now: int) -> User:
        """Revoke everything issued to the user until now (logout everywhere): ``revoked_before`` moves
        to the next whole second, never back; the account stays enabled."""
        key = username_key(username)
        users = t.users
        with self._write() as conn:
            conn.execute(
                update(users)
                .where(users.c.username_key == key, users.c.revoked_before < now + 1)
                .values(revoked_before=now + 1)
            )
            row = conn.execute(select(users).where(users.c.username_key == key)).first()
            if row is None:
                raise NotFoundError(f"no user {username!r}")
        return _user(row)

    def users(self) -> list[User]:
        with self._read() as conn:
            return [_user(r) for r in conn.execute(select(t.users).order_by(t.users.c.username_key))]
