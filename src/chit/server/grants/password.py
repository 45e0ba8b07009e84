"""The resource owner password credentials grant (RFC 6749 §4.3), for allow-listed first-party clients.

A wrong password, an unknown user and a disabled user get the same answer and cost the same
Argon2 work. Brute force is limited per account and per source (``chit.server.throttle``): each
attempt is counted before its password is checked, and a success takes it back.
"""

from __future__ import annotations

import time
from typing import ClassVar

from chit.errors import InvalidGrantError
from chit.policy.permissions import intersect
from chit.policy.scopes import client_cap, parse_permissions, select_scope
from chit.server.audit import FAILURE
from chit.server.authserver import AuthServer
from chit.server.credentials import hash_secret, new_secret, verify_password
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope
from chit.server.throttle import LoginThrottle, ThrottlePolicy

LOGIN_FAILED = "invalid username or password"


def wait_out_revocation(server: AuthServer, revoked_before: int) -> None:
    """A login in the second of a logout everywhere (or of disabling) waits for that second to end:
    whole-second ``iat`` makes everything issued in it revoked, and the new tokens would be born dead."""
    wait = revoked_before - server.clock()
    if 0 < wait <= 1:
        time.sleep(wait)


class PasswordGrant:
    grant_type: ClassVar[str] = "password"

    def __init__(self, server: AuthServer) -> None:
        self.server = server
        s = server.settings
        self.throttle = LoginThrottle(
            server.store,
            ThrottlePolicy(
                account_max_failures=s.account_max_failures,
                source_max_failures=s.source_max_failures,
                source_window=s.source_window,
                lock_seconds=s.lock_seconds,
                max_lock_seconds=s.max_lock_seconds,
            ),
        )

    def issue(self, request: TokenRequest) -> IssuedTokens:
        username = request.require("username")
        password = request.require("password")
        wanted = requested_scope(request.params)  # a malformed scope costs no login attempt
        server, store = self.server, self.server.store
        # counted as a failure before Argon2 runs: concurrent attempts cannot outrun the limit
        attempt = self.throttle.reserve(username, request.source, server.now())
        user = store.user_by_username(username)
        verified = verify_password(user.password_hash if user else None, password)
        if user is None or not verified or user.disabled:
            request.event(
                "login.failed", FAILURE, subject=user.id if user else None, detail={"username": username[:64]}
            )
            raise InvalidGrantError(LOGIN_FAILED)
        self.throttle.succeeded(attempt, server.now())
        wait_out_revocation(server, user.revoked_before)

        available = intersect(parse_permissions(store.permissions_of(user.id)), client_cap(request.client.scope))
        granted = select_scope(available, wanted)
        refresh_token = family_id = None
        if "refresh_token" in request.client.grant_types:
            refresh_token = new_secret()
            now = server.now()
            settings = server.settings
            family_id = store.start_family(
                client_pk=request.client.id,
                user_id=user.id,
                scope=[str(p) for p in granted],
                token_hash=hash_secret(refresh_token),
                now=now,
                idle_expires_at=now + settings.refresh_idle_ttl,
                absolute_expires_at=now + settings.refresh_absolute_ttl,
            )
        issued = server.issue_access_token(
            subject=user.id, client=request.client, permissions=granted, session_id=family_id
        )
        return IssuedTokens(issued, refresh_token)
