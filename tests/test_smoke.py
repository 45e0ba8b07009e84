from pathlib import Path

import httpx
from helpers import ChitServer

MANIFEST = """
id = "svc"
description = "A service for the smoke test"

[permissions]
"things:read" = "Read things"
"""


def test_server_starts_and_issues_client_credentials_token(server: ChitServer, tmp_path: Path) -> None:
    manifest = tmp_path / "svc.toml"
    manifest.write_text(MANIFEST)
    server.cli_ok("service", "register", str(manifest))
    client = server.add_client("svc-reader", "--scope", "svc:things:read")
    r = httpx.post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "svc:things:read"
