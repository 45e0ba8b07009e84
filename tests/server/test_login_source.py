"""Where a login comes from: what its per-source limit counts and the audit log and access log record.

By default the source is the connection's peer: a client's own ``X-Forwarded-For`` names nothing, so
rotating it gains no fresh budget and cannot lock someone else's address. ``chit serve
--forwarded-allow-ips`` names the proxies whose header is believed. An IPv6 source counts by its /64,
an IPv4-mapped one as IPv4. The plain access log escapes what a decoded path could smuggle into it (a
line break, a terminal escape).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import ADMIN_PASSWORD, Api, ChitServer, as_user, free_port

from chit.server.throttle import source_key

LIMITS = {"CHIT_SOURCE_MAX_FAILURES": "5"}


def failed_login(chit: ChitServer, username: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    data = {"grant_type": "password", "client_id": "chit-cli", "username": username, "password": "wrong-password"}
    return httpx.post(chit.token_url, data=data, headers=headers, timeout=30).status_code


def audited_sources(admin: Api) -> list[str]:
    """The sources of the failed logins, as the audit log keeps them (read with a token taken beforehand: the
    source may be locked by then)."""
    events = admin.get("/admin/audit", params={"type": "login.failed", "limit": 200}).json()["events"]
    return [str(event["source"]) for event in events]


def test_a_forwarded_for_header_names_no_source_unless_its_proxy_is_trusted(tmp_path: Path) -> None:
    chit = ChitServer(tmp_path / "data", free_port(), extra_env=LIMITS)
    with chit.running():
        admin = as_user(chit, "admin", ADMIN_PASSWORD)
        rotating = [failed_login(chit, f"spray{i}", forwarded_for=f"10.9.0.{i}") for i in range(8)]
        assert rotating[:5] == [400] * 5
        assert rotating[5:] == [429] * 3  # one source, the peer, whatever the header said
        assert set(audited_sources(admin)) == {"127.0.0.1"}
        assert "10.9.0." not in chit.log()


def test_the_header_of_a_named_proxy_is_believed(tmp_path: Path) -> None:
    chit = ChitServer(tmp_path / "data", free_port(), extra_env=LIMITS)
    with chit.running("--forwarded-allow-ips", "127.0.0.1"):
        admin = as_user(chit, "admin", ADMIN_PASSWORD)
        assert [failed_login(chit, f"a{i}", forwarded_for="203.0.113.7") for i in range(6)] == [400] * 5 + [429]
        assert failed_login(chit, "b0", forwarded_for="198.51.100.1") == 400  # another client behind the proxy
        assert {"203.0.113.7", "198.51.100.1"} <= set(audited_sources(admin))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe"),  # one /64: one line, one host
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2::1", "2001:DB8:1:2:0:0:0:1"),
    ],
)
def test_one_network_counts_as_one_source(one: str, other: str) -> None:
    assert source_key(one) == source_key(other)


@pytest.mark.parametrize(("one", "other"), [("2001:db8:1:2::1", "2001:db8:1:3::1"), ("192.0.2.1", "192.0.2.2")])
def test_other_networks_count_apart(one: str, other: str) -> None:
    assert source_key(one) != source_key(other)


def test_the_plain_access_log_keeps_one_request_a_line(tmp_path: Path) -> None:
    chit = ChitServer(tmp_path / "data", free_port())
    with chit.running():
        forged = "/x%0A2026-12-07T00:00:00.000Z%2010.1.2.3:4444%20%22POST%20/admin/users%22%20201%203.0%20ms"
        assert httpx.get(chit.url + forged, timeout=30).status_code == 404
        assert httpx.get(chit.url + "/%1B[2Jred", timeout=30).status_code == 404
        log = chit.log()
    assert "\x1b" not in log
    (line,) = [line for line in log.splitlines() if "GET /x" in line]
    assert '"GET /x\\n2026-12-07T00:00:00.000Z 10.1.2.3:4444 \\"POST /admin/users\\" 201 3.0 ms" 404' in line
    assert not [line for line in log.splitlines() if line.startswith("2026-12-07T00:00:00.000Z")]
