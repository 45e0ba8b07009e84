"""The operator's revocation commands against a real ``chit serve`` (issue 17): ``chit user logout-everywhere``
and ``POST /admin/users/{username}/logout``, ``chit session revoke`` reaching the revocation feed, and
``chit revocations tail`` (``--after``, ``--limit``, ``--json``, ``--follow``).

One server for the module; every test uses users of its own, and reads the feed from the cursor it
found, since other tests' events are there too.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from helpers import (
    ADMIN_PASSWORD,
    Api,
    ChitServer,
    ModuleServers,
    ServiceClient,
    access_token,
    as_user,
    assert_error,
    at_once,
    audit_events,
    claims_of,
    login,
    refresh,
    register_service,
    stop_process,
)

PASSWORD = "revocation-cli-password-1"
LEDGER = """\
id = "ledger"
[permissions]
"entries:read" = "Read"
"""
FOLLOW_WITHIN = 1.0  # seconds from a revocation's commit to its line in ``tail --follow``


class Setup(NamedTuple):
    chit: ChitServer
    ledger: ServiceClient  # a registered service: it introspects, and reads the feed as services do
    admin: Api

    def feed(self, after: int = 0) -> list[dict[str, Any]]:
        grant = {"grant_type": "client_credentials", "scope": "chit:revocations:read"}
        token = access_token(self.ledger.post("/oauth2/token", grant))
        response = httpx.get(
            self.chit.url + "/oauth2/revocations",
            params={"after": after},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def cursor(self) -> int:
        events = self.feed()
        return events[-1]["id"] if events else 0

    def sessions(self, username: str, *ended: str) -> list[str]:
        """The ids of the user's live sessions (``"--all"``: ended ones too)."""
        listed = self.chit.cli_ok("session", "list", "--user", username, *ended, "--json").json()["sessions"]
        return sorted(s["id"] for s in listed)


@pytest.fixture(scope="module")
def setup(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    chit = module_server("revocation-cli")
    ledger = register_service(chit, tmp_path_factory.mktemp("manifests"), "ledger", LEDGER)
    chit.cli_ok("role", "create", "user-readers", "--permission", "chit:users:read")
    chit.cli_ok("role", "create", "session-managers", "--permission", "chit:sessions:write")
    return Setup(chit, ledger, as_user(chit, "admin", ADMIN_PASSWORD))


def logged_in(chit: ChitServer, username: str) -> tuple[str, str]:
    """A fresh login of the user through the first-party client: (access token, refresh token)."""
    response = login(chit, username, PASSWORD)
    assert response.status_code == 200, response.text
    return response.json()["access_token"], response.json()["refresh_token"]


def wait_past(epoch: int) -> None:
    """Sleep until the clock reads ``epoch`` (whole seconds): what is issued then is not revoked."""
    while time.time() < epoch:
        time.sleep(0.05)


def assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# chit user logout-everywhere ------------------------------------------------------------------------


def test_logout_everywhere_ends_every_token_and_session_and_the_next_login_works(setup: Setup) -> None:
    chit, ledger = setup.chit, setup.ledger
    user_id = chit.add_user("erin", PASSWORD)["id"]
    first, second = logged_in(chit, "erin"), logged_in(chit, "erin")
    sessions = setup.sessions("erin")
    assert len(sessions) == 2
    cursor = setup.cursor()

    answer = chit.cli_ok("user", "logout-everywhere", "erin", "--json").json()
    assert answer == {"user": "erin", "user_id": user_id, "sessions_revoked": sessions}

    for access, refresh_token in (first, second):
        assert ledger.introspect(access) == {"active": False}
        assert_error(refresh(chit, refresh_token), 400, "invalid_grant")
    listed = chit.cli_ok("session", "list", "--user", "erin", "--all", "--json").json()["sessions"]
    assert {(s["id"], s["revoked_reason"]) for s in listed} == {(s, "logout") for s in sessions}

    # one subject event tells every service: whatever was issued to erin before not_before
    [event] = [e for e in setup.feed(cursor) if e["value"] == user_id]
    assert event["kind"] == "subject"
    assert event["not_before"] >= claims_of(first[0])["iat"]

    # the account stays enabled: the next login works, and so does its refresh
    wait_past(event["not_before"])
    access, refresh_token = logged_in(chit, "erin")
    assert ledger.introspect(access)["active"] is True
    assert refresh(chit, refresh_token).status_code == 200
    assert setup.sessions("erin") != sessions

    [audited] = [e for e in audit_events(chit, "user.logged_out") if e["subject"] == user_id]
    assert audited["actors"] == ["operator"]
    assert sorted(audited["detail"]["sessions"]) == sessions


def test_a_login_in_the_second_of_a_logout_everywhere_gives_tokens_that_work(setup: Setup) -> None:
    chit, ledger = setup.chit, setup.ledger
    chit.add_user("erin-again", PASSWORD)
    while time.time() % 1 > 0.2:  # the logout early in a second, so that the login falls in the same one
        time.sleep(0.01)
    chit.cli_ok("user", "logout-everywhere", "erin-again")
    access, refresh_token = logged_in(chit, "erin-again")

    assert claims_of(access)["iat"] >= setup.feed(setup.cursor() - 1)[-1]["not_before"]
    assert ledger.introspect(access)["active"] is True
    assert refresh(chit, refresh_token).status_code == 200


def test_logout_everywhere_prints_what_it_did(setup: Setup) -> None:
    setup.chit.add_user("gail", PASSWORD)
    logged_in(setup.chit, "gail")
    result = setup.chit.cli_ok("user", "logout-everywhere", "gail")
    assert result.stdout.strip() == "Logged out gail everywhere: 1 session(s) revoked"


def test_logout_everywhere_of_an_unknown_user_is_refused_in_one_line(setup: Setup) -> None:
    cursor = setup.cursor()
    assert_refused(setup.chit.cli("user", "logout-everywhere", "nobody"), "no user 'nobody'")
    assert setup.feed(cursor) == []


# POST /admin/users/{username}/logout -----------------------------------------------------------------


def test_the_admin_api_logs_a_user_out_everywhere(setup: Setup) -> None:
    chit = setup.chit
    user_id = chit.add_user("hank", PASSWORD)["id"]
    access, _ = logged_in(chit, "hank")
    [session] = setup.sessions("hank")

    response = setup.admin.post("/admin/users/hank/logout")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sessions_revoked"] == [session]
    assert (body["user"]["id"], body["user"]["username"], body["user"]["disabled"]) == (user_id, "hank", False)
    assert setup.ledger.introspect(access) == {"active": False}

    assert_error(setup.admin.post("/admin/users/nobody/logout"), 404, "not_found", "no user 'nobody'")


def test_the_admin_api_takes_sessions_write_and_audits_a_refusal(setup: Setup) -> None:
    chit = setup.chit
    chit.add_user("ivy", PASSWORD, "--role", "user-readers")
    chit.add_user("jack", PASSWORD, "--role", "session-managers")
    victim = chit.add_user("kim", PASSWORD)["id"]

    ivy = as_user(chit, "ivy", PASSWORD)
    response = ivy.post("/admin/users/kim/logout")
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "insufficient_scope"
    [refused] = [e for e in audit_events(chit, "admin.refused") if e["actors"] == [ivy.subject]]
    assert refused["detail"]["operation"] == "user.logout"
    assert refused["detail"]["username"] == "kim"

    # chit:sessions:write logs out whoever holds no more than the token could hand out, not the super admin
    jack = as_user(chit, "jack", PASSWORD)
    assert jack.post("/admin/users/kim/logout").status_code == 200
    response = jack.post("/admin/users/admin/logout")
    assert response.status_code == 403, response.text
    assert [e for e in audit_events(chit, "user.logged_out") if e["subject"] == victim]


def test_twenty_concurrent_logouts_all_succeed(setup: Setup) -> None:
    chit = setup.chit
    for n in range(5):
        chit.add_user(f"crowd{n}", PASSWORD)
        logged_in(chit, f"crowd{n}")

    responses = at_once(20, lambda i: setup.admin.post(f"/admin/users/crowd{i % 5}/logout"))
    assert [r.status_code for r in responses] == [200] * 20, [r.text for r in responses if r.status_code != 200]
    for n in range(5):
        # each session was ended by exactly one of the calls
        ended = [
            s for r in responses if r.json()["user"]["username"] == f"crowd{n}" for s in r.json()["sessions_revoked"]
        ]
        assert sorted(ended) == setup.sessions(f"crowd{n}", "--all")


# chit session revoke --------------------------------------------------------------------------------


def test_session_revoke_publishes_a_session_event(setup: Setup) -> None:
    chit = setup.chit
    chit.add_user("lena", PASSWORD)
    access, refresh_token = logged_in(chit, "lena")
    [session] = setup.sessions("lena")
    cursor = setup.cursor()

    assert chit.cli_ok("session", "revoke", session).stdout.strip() == f"Revoked session {session}"
    [event] = setup.feed(cursor)
    assert (event["kind"], event["value"]) == ("session", session)
    assert setup.ledger.introspect(access) == {"active": False}
    assert_error(refresh(chit, refresh_token), 400, "invalid_grant")

    # revoking it again publishes nothing
    assert "already revoked" in chit.cli_ok("session", "revoke", session).stdout
    assert setup.feed(cursor) == [event]


# chit revocations tail ------------------------------------------------------------------------------


def tail(setup: Setup, *args: str) -> list[dict[str, Any]]:
    result = setup.chit.cli_ok("revocations", "tail", "--json", *args)
    return [json.loads(line) for line in result.stdout.splitlines()]


def revoke_own_tokens(setup: Setup, count: int) -> list[str]:
    """``count`` of the ledger's own tokens, revoked by it at the running server: their jtis."""
    jtis = []
    for _ in range(count):
        token = setup.ledger.own_token()
        assert setup.ledger.revoke(token).status_code == 200
        jtis.append(claims_of(token)["jti"])
    return jtis


def test_tail_prints_what_the_running_server_revoked(setup: Setup) -> None:
    cursor = setup.cursor()
    jtis = revoke_own_tokens(setup, 3)

    events = tail(setup, "--after", str(cursor))
    assert [(e["kind"], e["value"]) for e in events] == [("token", jti) for jti in jtis]
    assert events == setup.feed(cursor)  # what services read, in the same form
    assert tail(setup, "--after", str(cursor), "--limit", "2") == events[:2]
    assert tail(setup, "--after", str(events[-1]["id"])) == []

    human = setup.chit.cli_ok("revocations", "tail", "--after", str(cursor), "-n", "1").stdout.splitlines()
    event = events[0]
    expires = datetime.fromtimestamp(event["expires"], UTC).isoformat()
    assert human == [f"{event['id']} token {jtis[0]} not_before=- expires={expires}"]


def test_tail_without_after_prints_the_newest_twenty(setup: Setup) -> None:
    jtis = revoke_own_tokens(setup, 22)
    events = tail(setup)
    assert [e["value"] for e in events] == jtis[-20:]
    assert [e["value"] for e in tail(setup, "--limit", "3")] == jtis[-3:]


def test_tail_shows_not_before_as_an_iso_time(setup: Setup) -> None:
    chit = setup.chit
    user_id = chit.add_user("mona", PASSWORD)["id"]
    chit.cli_ok("user", "logout-everywhere", "mona")
    [line] = chit.cli_ok("revocations", "tail", "-n", "1").stdout.splitlines()
    event_id, kind, value, not_before, expires = line.split(" ")
    assert (kind, value) == ("subject", user_id)
    assert datetime.fromisoformat(not_before.removeprefix("not_before=")).tzinfo is not None
    assert datetime.fromisoformat(expires.removeprefix("expires=")) > datetime.now(UTC)
    assert int(event_id) == setup.cursor()


@pytest.mark.parametrize("args", [["--after", "-1"], ["--limit", "0"], ["--after", "x"]])
def test_a_bad_cursor_or_limit_is_a_usage_error(setup: Setup, args: list[str]) -> None:
    result = setup.chit.cli("revocations", "tail", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""


def test_tail_follow_prints_an_event_as_it_commits_and_ctrl_c_ends_it(setup: Setup, tmp_path: Path) -> None:
    chit = setup.chit
    [first] = revoke_own_tokens(setup, 1)
    start = setup.cursor() - 1  # the follower prints that event first: then it is following
    command = [sys.executable, "-m", "chit", "revocations", "tail", "--follow", "--json", "--after", str(start)]
    follower = subprocess.Popen(
        [*command, *chit.location_args()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as at a terminal: a test run started as a background job would hand its children SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert json.loads(lines.get(timeout=30))["value"] == first
        [revoked] = revoke_own_tokens(setup, 1)
        committed = time.monotonic()
        event = json.loads(lines.get(timeout=10))
        assert event["value"] == revoked
        assert time.monotonic() - committed < FOLLOW_WITHIN

        follower.send_signal(signal.SIGINT)  # Ctrl-C
        assert follower.wait(timeout=10) == 0
        assert follower.stderr is not None
        assert "Traceback" not in follower.stderr.read()
    finally:
        stop_process(follower)  # type: ignore[arg-type]  # a text-mode process
        reader.join(timeout=5)
