"""Group commit of the audit log: every waiter returns only once its event is committed.

On SQLite, async callers commit on their own event loop, once per loop turn; on PostgreSQL, and for
threads, a writer thread commits what queued up meanwhile. Both keep one unbroken hash chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import Engine

from chit.server.audit import AuditEvent, AuditLog, AuditWriteError, verify_chain
from chit.storage.engine import migrate
from chit.storage.sql.store import Store


class CountingStore(Store):
    """The real store, counting its commits of audit batches (and failing them when told to)."""

    commits = 0
    fail = False

    def append_audit(self, rows: Sequence[dict[str, Any]], chain: Any) -> None:
        if self.fail:
            raise RuntimeError("disk full")
        type(self).commits += 1
        super().append_audit(rows, chain)


@pytest.fixture
def store(engine: Engine) -> CountingStore:
    """A migrated database on SQLite and on PostgreSQL (the shared ``engine``), behind a ``CountingStore``."""
    migrate(engine)
    CountingStore.commits = 0
    CountingStore.fail = False
    return CountingStore(engine)


def test_concurrent_async_callers_share_commits_and_the_chain_holds(store: CountingStore) -> None:
    audit = AuditLog(store)

    async def main() -> None:
        await asyncio.gather(*(audit.record_async(AuditEvent("token.issued", subject=f"s{i}")) for i in range(40)))

    asyncio.run(main())
    records = list(store.iter_audit())
    assert sorted(r.subject for r in records) == sorted(f"s{i}" for i in range(40))
    assert verify_chain(records).intact
    assert 1 <= CountingStore.commits < 40  # batched, not one commit per event
    if store.engine.dialect.name == "sqlite":
        assert audit.commit_on_loop
        assert CountingStore.commits == 1  # all 40 arrived within one turn of the loop


def test_threads_and_async_callers_mix_in_one_chain(store: CountingStore) -> None:
    audit = AuditLog(store)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        threaded = [loop.run_in_executor(None, audit.record, AuditEvent("thread", subject=f"t{i}")) for i in range(10)]
        looped = [audit.record_async(AuditEvent("loop", subject=f"l{i}")) for i in range(10)]
        await asyncio.gather(*threaded, *looped)

    asyncio.run(main())
    records = list(store.iter_audit())
    assert len(records) == 20
    assert verify_chain(records).intact


def test_a_failed_commit_reaches_every_waiter(store: CountingStore) -> None:
    audit = AuditLog(store)
    CountingStore.fail = True

    async def main() -> list[BaseException | None]:
        calls = [audit.record_async(AuditEvent("token.issued")) for _ in range(5)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    outcomes = asyncio.run(main())
    assert all(isinstance(o, AuditWriteError) for o in outcomes)
    with pytest.raises(AuditWriteError):
        audit.record(AuditEvent("token.issued"))
    CountingStore.fail = False
    audit.record(AuditEvent("token.issued"))  # the writer lives on after a failure
    assert len(list(store.iter_audit())) == 1
