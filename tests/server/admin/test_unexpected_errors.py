"""An unexpected error on the admin API answers a bare 500 and still leaves a trace in the audit log
(DESIGN §4: a refusal is audited like a success), with who asked and nothing of the cause.

In-process: nothing a real server does on purpose fails this way, so the failure is put in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import ADMIN_PASSWORD, claims_of

from chit.server.administration import Administration
from chit.server.app import create_app
from chit.server.bootstrap import bootstrap
from chit.server.config import build_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("CHIT_ADMIN_PASSWORD", ADMIN_PASSWORD)
    settings = build_settings(data_dir=tmp_path / "data")
    bootstrap(settings)
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=settings.issuer) as client:
        yield client


async def test_an_unexpected_error_is_a_500_that_is_audited(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    form = {"grant_type": "password", "client_id": "chit-cli", "username": "admin", "password": ADMIN_PASSWORD}
    token = (await http.post("/oauth2/token", data=form)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    def fails(_admin: Administration) -> Any:
        raise RuntimeError("the cause, for the log only")

    monkeypatch.setattr(Administration, "users", fails)
    r = await http.get("/admin/users", headers=headers)
    assert (r.status_code, r.json()) == (500, {"error": "server_error"})

    audit = await http.get("/admin/audit", params={"type": "admin.refused"}, headers=headers)
    [event] = [e for e in audit.json()["events"] if e["detail"]["operation"] == "GET /admin/users"]
    assert (event["outcome"], event["actors"]) == ("failure", [claims_of(token)["sub"]])
    assert (event["detail"]["status"], event["detail"]["error"]) == (500, "server_error")
    assert "the cause" not in event["detail"]["reason"]
