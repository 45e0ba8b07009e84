"""Deferred delegations in the store, on a SQLite file and the real PostgreSQL; and the token-exchange
grant a service's own client gains and loses with its manifest's ``[on_behalf]``."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.exc import IntegrityError

from chit.errors import NotFoundError, RefusedError
from chit.policy import administration as rules
from chit.policy.manifest import parse_manifest
from chit.server.audit import FAILURE, SUCCESS, AuditEvent, AuditLog
from chit.storage.records import DelegationRecord
from chit.storage.sql.store import Store

NOW = 1_700_000_000
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
MANIFEST = """\
id = "imgs"
[permissions]
"images:read" = "Read"
[on_behalf]
permissions = ["imgs:images:read"]
"""


def record(n: int = 1, *, subject: str = "usr_a", client: str = "imgs", expires: int = NOW + 3600) -> DelegationRecord:
    return DelegationRecord(
        id=f"dlg_{n}",
        subject_id=subject,
        client_id=client,
        secret_hash=f"{n:064d}",
        scope=frozenset({"tags:labels:write", "imgs:images:read"}),
        job_id=f"job-{n}",
        act='{"sub":"cli_x","client_id":"x"}',
        created_at=NOW,
        expires_at=expires,
    )


def test_a_delegation_is_stored_as_given_and_listed_by_user_and_service(store: Store) -> None:
    store.create_delegation(record(1), max_active=10, now=NOW)
    store.create_delegation(record(2, subject="usr_b"), max_active=10, now=NOW)
    store.create_delegation(record(3, client="other"), max_active=10, now=NOW)
    assert store.delegation("dlg_1") == record(1)
    assert store.delegation("dlg_missing") is None
    assert [d.id for d in store.delegations("usr_a")] == ["dlg_1", "dlg_3"]
    assert [d.id for d in store.delegations(client_id="other")] == ["dlg_3"]
    assert [d.id for d in store.delegations(ids=["dlg_2", "dlg_9"])] == ["dlg_2"]
    assert len(store.delegations()) == 3
    assert "0000" not in repr(store.delegation("dlg_1"))  # the hash stays out of logs


def test_a_duplicate_id_is_refused_by_the_database(store: Store) -> None:
    store.create_delegation(record(1), max_active=10, now=NOW)
    with pytest.raises(IntegrityError):
        store.create_delegation(record(1), max_active=10, now=NOW)


def redeemed_event(delegation_id: str, outcome: str = SUCCESS, type: str = "delegation.redeemed") -> AuditEvent:
    return AuditEvent(type, outcome, client_id="imgs", subject="usr_a", token_id=delegation_id)


def test_each_successful_redemption_event_counts_one_redemption_in_the_audit_transaction(store: Store) -> None:
    """The audit event is the count (migration 0008): appended from a thread and from an event loop (the
    two ways the audit commits), each success adds one and sets ``last_used_at``; nothing else counts."""
    store.create_delegation(record(1, expires=NOW + 100), max_active=10, now=NOW)
    store.create_delegation(record(2), max_active=10, now=NOW)
    clock = [NOW + 10.25]
    audit = AuditLog(store, clock=lambda: clock[0])
    audit.record(redeemed_event("dlg_1"))
    clock[0] = NOW + 20.75

    async def on_a_loop() -> None:
        await audit.record_async(redeemed_event("dlg_1"), AuditEvent("token.issued", SUCCESS, token_id="dlg_1"))

    asyncio.run(on_a_loop())
    audit.record(
        redeemed_event("dlg_1", FAILURE),
        redeemed_event("dlg_1", type="delegation.created"),
        redeemed_event("dlg_missing"),
    )
    counted = store.delegation("dlg_1")
    assert counted is not None
    assert (counted.redemptions, counted.last_used_at) == (2, NOW + 20)
    untouched = store.delegation("dlg_2")
    assert untouched is not None
    assert (untouched.redemptions, untouched.last_used_at) == (0, None)
    assert len(store.audit_events(limit=10)) == 6


def test_a_delegation_is_revoked_once(store: Store) -> None:
    store.create_delegation(record(1, expires=NOW + 100), max_active=10, now=NOW)
    assert store.revoke_delegation("dlg_1", NOW + 30)
    assert not store.revoke_delegation("dlg_1", NOW + 31)  # revoked already: nothing changes
    assert store.delegation("dlg_1").revoked_at == NOW + 30  # type: ignore[union-attr]
    with pytest.raises(NotFoundError):
        store.revoke_delegation("dlg_missing", NOW)


def test_live_delegations_per_user_and_service_are_bounded(store: Store) -> None:
    for n in range(3):
        store.create_delegation(record(n), max_active=3, now=NOW)
    with pytest.raises(RefusedError, match="3 live delegations"):
        store.create_delegation(record(9), max_active=3, now=NOW)
    store.create_delegation(record(10, subject="usr_b"), max_active=3, now=NOW)  # another user: its own bound
    store.revoke_delegation("dlg_0", NOW)
    store.create_delegation(record(11), max_active=3, now=NOW)  # a revoked one no longer counts
    assert store.delegation("dlg_9") is None


def test_concurrent_creations_never_pass_the_bound(store: Store) -> None:
    errors: list[Exception] = []

    def create(n: int) -> None:
        try:
            store.create_delegation(record(n), max_active=5, now=NOW)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live = store.delegations("usr_a")
    assert len(live) <= 5
    assert len(live) + len(errors) == 20


def register(store: Store, text: str, now: int = NOW) -> None:
    manifest = parse_manifest(text, "test.toml")
    store.register_service(manifest, secret_hash="a" * 64, now=now, admin_role=admin_role(manifest.id))


def admin_role(service_id: str) -> tuple[str, str]:
    return rules.service_admin_role(service_id), str(rules.service_admin_permission(service_id))


def test_the_service_client_gains_and_loses_the_exchange_grant_with_on_behalf(store: Store) -> None:
    register(store, MANIFEST)
    client = store.client_by_client_id("imgs")
    assert client is not None
    assert client.grant_types == {"client_credentials", EXCHANGE}
    register(store, MANIFEST.replace('permissions = ["imgs:images:read"]', "permissions = []"), now=NOW + 1)
    client = store.client_by_client_id("imgs")
    assert client is not None
    assert client.grant_types == {"client_credentials"}
    register(store, MANIFEST, now=NOW + 2)
    assert store.client_by_client_id("imgs").grant_types == {"client_credentials", EXCHANGE}  # type: ignore[union-attr]
