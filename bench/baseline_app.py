"""The issuance baseline: a bare FastAPI app that does the least a token endpoint can do.

``POST /token`` parses the urlencoded body, signs an EdDSA JWT with PyJWT (key parsed once, at
import) and stores nothing; ``POST /empty`` does no work at all. Run by ``issuance.py`` under
uvicorn with the same settings as ``chit serve``; the key is a PKCS#8 PEM file named by
``BENCH_BASELINE_KEY``.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

_KEY = load_pem_private_key(Path(os.environ["BENCH_BASELINE_KEY"]).read_bytes(), password=None)
_HEADERS = {"typ": "at+jwt", "kid": "baseline"}
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
ISSUER = "http://127.0.0.1"

app = FastAPI()


@app.post("/token")
async def token(request: Request) -> Response:
    params = dict(parse_qsl((await request.body()).decode()))
    if params.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400, headers=_NO_STORE)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "baseline-client",
        "aud": ["image-store"],
        "exp": now + 600,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "client_id": "baseline-client",
        "scope": "image-store:images:read",
    }
    access_token = jwt.encode(claims, _KEY, algorithm="EdDSA", headers=_HEADERS)
    body = {"access_token": access_token, "token_type": "Bearer", "expires_in": 600, "scope": claims["scope"]}
    return JSONResponse(body, headers=_NO_STORE)


@app.post("/empty")
async def empty() -> Response:
    return JSONResponse({"ok": True})


@app.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}
