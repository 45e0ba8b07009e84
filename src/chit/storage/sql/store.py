"""``Store``: chit's storage on SQLAlchemy (SQLite or PostgreSQL), one implementation per aggregate."""

from __future__ import annotations

from chit.storage.base import Storage
from chit.storage.sql.api_keys import ApiKeys
from chit.storage.sql.audit import Audit
from chit.storage.sql.clients import Clients
from chit.storage.sql.delegations import Delegations
from chit.storage.sql.grants import Grants
from chit.storage.sql.revocation_events import RevocationEvents
from chit.storage.sql.revoked_tokens import RevokedTokens
from chit.storage.sql.services import Services
from chit.storage.sql.sessions import Sessions
from chit.storage.sql.throttle import Throttle
from chit.storage.sql.users import Users


class Store(
    Users, Clients, Services, Grants, ApiKeys, Delegations, Sessions, RevokedTokens, RevocationEvents, Throttle, Audit
):
    """Every aggregate on one engine; each method is one transaction."""


def _conforms(store: Store) -> Storage:
    return store  # mypy checks here that Store implements every storage Protocol
