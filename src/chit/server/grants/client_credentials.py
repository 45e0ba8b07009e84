"""The client credentials grant (RFC 6749 §4.4): a service account acting as itself.

The token carries the client's own permissions, its ``--scope`` set plus what roles grant it,
narrowed to the requested ``scope``. No refresh token is issued (RFC 6749 §4.4.3).

Every registered service's own client also holds ``chit:revocations:read``, to follow the revocation
feed (DESIGN §4), but its tokens carry it only when the request asks for it in ``scope``: a service's
usual tokens keep exactly what its manifest ``[needs]`` (none when it needs nothing), and the one token
that reads the feed carries nothing else. The rule costs the usual request nothing: the service is
looked up only when the permission is asked for.
"""

from __future__ import annotations

from typing import ClassVar

from chit.errors import UnauthorizedClientError
from chit.policy.permissions import Permission
from chit.policy.scopes import parse_permissions, select_scope
from chit.server.authserver import AuthServer
from chit.server.grants.base import IssuedTokens, TokenRequest, requested_scope

FEED_PERMISSION = "chit:revocations:read"
_FEED = Permission.parse(FEED_PERMISSION)


class ClientCredentialsGrant:
    grant_type: ClassVar[str] = "client_credentials"

    def __init__(self, server: AuthServer) -> None:
        self.server = server

    def issue(self, request: TokenRequest) -> IssuedTokens:
        client = request.client
        if client.public:
            raise UnauthorizedClientError("a public client cannot use client_credentials")
        wanted = requested_scope(request.params)
        from_roles = client.role_permissions
        if from_roles is None:
            from_roles = self.server.store.permissions_of(client.id)
        held = parse_permissions(client.scope or ()) | parse_permissions(from_roles)
        if wanted is not None and _FEED in wanted and self.server.store.service(client.client_id) is not None:
            held |= {_FEED}
        granted = select_scope(held, wanted)
        issued = self.server.issue_access_token(subject=client.id, client=client, permissions=granted)
        return IssuedTokens(issued)
