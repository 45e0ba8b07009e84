"""A chit minted by chit verifies in another Biscuit implementation: biscuit-wasm under Node, given only
the root key that discovery publishes and the vocabulary of DESIGN §4 (``verify.mjs`` beside this file).

Node and npm are needed; the packages are installed with ``npm ci`` when missing. In CI (``CI=true``)
a missing Node fails the test; elsewhere it skips with a message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import biscuit_auth
import httpx
import pytest
from helpers import IN_CI, TOKEN_EXCHANGE, ChitServer, ModuleServers, access_token, login, register_manifest

HERE = Path(__file__).resolve().parent / "biscuit-wasm"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
BISCUIT = "urn:chit:token-type:biscuit"
PASSWORD = "interop-wasm-password-1"
CART = """\
id = "cart"
[permissions]
"carts:read" = "Read a cart"
[roles]
shopper = ["carts:read"]
[on_behalf]
permissions = ["payment:charges:create", "email:messages:send"]
"""
PAYMENT = 'id = "payment"\n[permissions]\n"charges:create" = "Charge"\n[roles]\npayer = ["charges:create"]\n'
EMAIL = 'id = "email"\n[permissions]\n"messages:send" = "Send"\n[roles]\nsender = ["messages:send"]\n'


def node_ready() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        message = "Node.js and npm are needed to verify a chit with biscuit-wasm"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    if not (HERE / "node_modules" / "@biscuit-auth" / "biscuit-wasm").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr


def wasm_verify(token: str, public_key: str, service: str, operations: list[str]) -> dict[str, Any]:
    request = {"token": token, "public_key": public_key, "service": service, "operations": operations}
    done = subprocess.run(
        ["node", "--experimental-wasm-modules", "--no-warnings", "verify.mjs"],
        cwd=HERE,
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


@pytest.fixture(scope="module")
def minted(module_server: ModuleServers, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A chit the cart service obtained for alice, and the root public key it names."""
    node_ready()
    chit: ChitServer = module_server("interop-wasm")
    directory = tmp_path_factory.mktemp("manifests")
    secrets = {
        name: register_manifest(chit, directory, name, text)
        for name, text in [("payment", PAYMENT), ("email", EMAIL), ("cart", CART)]
    }
    chit.add_user("alice", PASSWORD, "--role", "cart:shopper", "--role", "payment:payer", "--role", "email:sender")
    user = access_token(login(chit, "alice", PASSWORD))
    answer = httpx.post(
        chit.token_url,
        data={
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": user,
            "subject_token_type": ACCESS,
            "requested_token_type": BISCUIT,
        },
        auth=("cart", secrets["cart"]),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["issued_token_type"] == BISCUIT
    discovery = httpx.get(chit.url + "/.well-known/oauth-authorization-server", timeout=30).json()
    return answer.json()["access_token"], discovery["biscuit_public_keys"][0]


def test_biscuit_wasm_verifies_a_chit_with_the_published_root_key(minted: tuple[str, str]) -> None:
    token, root = minted
    assert wasm_verify(token, root, "payment", ["payment:charges:create"]) == {"allowed": True}
    assert wasm_verify(token, root, "email", ["email:messages:send"]) == {"allowed": True}
    refused = wasm_verify(token, root, "payment", ["payment:refunds:create"])
    assert refused["allowed"] is False
    assert 'right(\\"payment:refunds:create\\")' in refused["error"] or "payment:refunds:create" in refused["error"]


def test_biscuit_wasm_honours_a_block_appended_in_python(minted: tuple[str, str]) -> None:
    token, root = minted
    parsed = biscuit_auth.Biscuit.from_base64(token, lambda _id: biscuit_auth.PublicKey(root))
    for_email = parsed.append(biscuit_auth.BlockBuilder('check if service("email");')).to_base64()
    assert wasm_verify(for_email, root, "email", ["email:messages:send"]) == {"allowed": True}
    refused = wasm_verify(for_email, root, "payment", ["payment:charges:create"])
    assert refused["allowed"] is False
    assert "service" in refused["error"]


def test_biscuit_wasm_refuses_a_chit_under_another_root_key(minted: tuple[str, str]) -> None:
    token, _root = minted
    other = str(biscuit_auth.KeyPair().public_key)
    assert wasm_verify(token, other, "payment", ["payment:charges:create"])["allowed"] is False
