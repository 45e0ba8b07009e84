import httpx

from helpers import ChitServer


def test_server_starts_and_issues_client_credentials_token(server: ChitServer) -> None:
    client = server.add_client("svc", "--scope", "svc:things:read")
    r = httpx.post(
        server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "svc:things:read"
