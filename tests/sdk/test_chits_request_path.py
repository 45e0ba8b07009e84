"""The ``path`` fact has one form everywhere: the percent-decoded path the router matches (``scope["path"]``),
stated alike by the FastAPI dependency and the Starlette middleware, and bound in that form by
``ChitForwarder(bind_request=True)`` from httpx's ``URL.path``. A bound path is one path: a ``*`` the request's
own path ends in (``%2A`` decoded, or literal) never becomes a prefix, and ``%3F`` (``?``) is never confused
with ``%253F`` (``%3F``)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI, Security
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chit import ChitForwarder, Principal, Verifier, attenuate
from chit.core.chit_authorizer import parse_for_attenuation, parse_root_keys
from chit.sdk import BearerAuthMiddleware, principal_of
from chit.testing import TestIssuer

pytestmark = pytest.mark.anyio
READ = "files:docs:read"
FETCH = "gateway:docs:fetch"
FILES, GATEWAY = "http://files.test", "http://gateway.test"


def fastapi_files(verifier: Verifier, seen: list[str]) -> FastAPI:
    app = FastAPI()

    @app.get("/docs/{rest:path}")
    async def doc(rest: str, principal: Principal = Security(verifier, scopes=[READ])) -> dict[str, str]:
        seen.append(principal.token)
        return {"doc": rest}

    return app


def starlette_files(verifier: Verifier, seen: list[str]) -> Starlette:
    async def doc(request: Request) -> JSONResponse:
        principal = principal_of(request)
        assert principal is not None
        principal.require(READ)
        seen.append(principal.token)
        return JSONResponse({"doc": request.path_params["rest"]})

    middleware = Middleware(BearerAuthMiddleware, verifier=verifier)
    return Starlette(routes=[Route("/docs/{rest:path}", doc)], middleware=[middleware])


Files = Callable[[Verifier, list[str]], FastAPI | Starlette]
ADAPTERS = pytest.mark.parametrize("files_app", [fastapi_files, starlette_files], ids=["fastapi", "starlette"])


def gateway(verifier: Verifier, files: FastAPI | Starlette) -> FastAPI:
    """A service that fetches a document whose path comes from its caller, the chit bound to that request."""
    app = FastAPI()
    forwarder = ChitForwarder(bind_request=True)

    @app.get("/fetch")
    async def fetch(target: str, principal: Principal = Security(verifier, scopes=[FETCH])) -> dict[str, object]:
        transport = httpx.ASGITransport(app=files)
        async with httpx.AsyncClient(transport=transport, base_url=FILES, auth=forwarder) as client:
            response = await client.get(target)
        return {"status": response.status_code, "body": response.json()}

    return app


async def get(app: FastAPI | Starlette, base_url: str, path: str, token: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        return await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


class Chain:
    """A user's chit, the gateway, and the files service with the chits it was presented."""

    def __init__(self, issuer: TestIssuer, files_app: Files) -> None:
        self.issuer = issuer
        self.seen: list[str] = []
        self.files = files_app(issuer.verifier("files"), self.seen)
        self.gateway = gateway(issuer.verifier("gateway"), self.files)
        self.user_chit = issuer.chit("usr_alice", [FETCH, READ])

    async def forwarded(self, target: str) -> str:
        """The chit the gateway bound to its request for ``target``, which files accepted."""
        response = await get(self.gateway, GATEWAY, "/fetch", self.user_chit, target=target)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == 200, response.json()
        return self.seen[-1]

    async def status(self, path: str, token: str) -> int:
        return (await get(self.files, FILES, path, token)).status_code


@pytest.fixture
def files_app() -> Files:
    """The files service's adapter; ``ADAPTERS`` runs a test with each."""
    return fastapi_files


@pytest.fixture
def chain(issuer: TestIssuer, files_app: Files) -> Chain:
    return Chain(issuer, files_app)


def path_checks(issuer: TestIssuer, token: str) -> list[str]:
    biscuit = parse_for_attenuation(token, parse_root_keys(issuer.discovery()).candidates)
    lines = "\n".join(biscuit.block_source(i) for i in range(1, biscuit.block_count())).splitlines()
    return [line for line in lines if "path" in line]


# --- a bound path ending in "*" is that one path ---------------------------------------------------------


@ADAPTERS
@pytest.mark.parametrize("target", ["/docs/search/q%2A", "/docs/search/q*"])
async def test_a_request_path_ending_in_a_star_binds_that_path_not_a_prefix(chain: Chain, target: str) -> None:
    chit = await chain.forwarded(target)
    assert path_checks(chain.issuer, chit) == ['check if path("/docs/search/q*");']
    for elsewhere in ("/docs/search/q-anything/else", "/docs/search/q", "/docs/search/q/x", "/docs/search/qa"):
        assert await chain.status(elsewhere, chit) == 403, elsewhere
    assert await chain.status("/docs/search/q%2A", chit) == 200
    assert await chain.status("/docs/search/q*", chit) == 200  # the same decoded path: the same route and name


async def test_attenuate_still_reads_a_final_star_as_a_prefix(chain: Chain) -> None:
    chit = attenuate(chain.user_chit, path="/docs/search/*", public_keys=[chain.issuer.root_key.public_key])
    assert path_checks(chain.issuer, chit) == ['check if path($p), $p.starts_with("/docs/search/");']
    assert await chain.status("/docs/search/q/anything", chit) == 200
    assert await chain.status("/docs/other", chit) == 403


# --- "%3F", "%23", "%5C": one bound path is one resource, in both adapters --------------------------------


ESCAPES = pytest.mark.parametrize(("escaped", "decoded"), [("%3F", "?"), ("%23", "#"), ("%5C", "\\")])


@ADAPTERS
@ESCAPES
async def test_a_path_with_an_escaped_character_is_bound_to_one_resource(
    chain: Chain, escaped: str, decoded: str
) -> None:
    keys = [chain.issuer.root_key.public_key]
    to_decoded = attenuate(chain.user_chit, path=f"/docs/a{decoded}b", public_keys=keys)
    to_escaped = attenuate(chain.user_chit, path=f"/docs/a{escaped}b", public_keys=keys)
    one, other = f"/docs/a{escaped}b", f"/docs/a%25{escaped[1:]}b"  # names "a?b" and "a%3Fb"
    assert (await get(chain.files, FILES, one, to_decoded)).json() == {"doc": f"a{decoded}b"}
    assert await chain.status(other, to_decoded) == 403
    assert (await get(chain.files, FILES, other, to_escaped)).json() == {"doc": f"a{escaped}b"}
    assert await chain.status(one, to_escaped) == 403


@ADAPTERS
@ESCAPES
async def test_a_chit_the_forwarder_bound_to_such_a_path_is_accepted_there_only(
    chain: Chain, escaped: str, decoded: str
) -> None:
    chit = await chain.forwarded(f"/docs/a{escaped}b")  # accepted by files on that path
    assert path_checks(chain.issuer, chit) == [f'check if path("/docs/a{decoded}b");']  # printed unescaped
    assert await chain.status(f"/docs/a%25{escaped[1:]}b", chit) == 403
    assert await chain.status(f"/docs/a{escaped}b", chit) == 200
