"""The items app of FastAPI's "OAuth2 scopes" security tutorial, moved onto chit.

The app keeps only its routes: the users, their passwords and the login live in the auth server
(``chit serve``), which signs tokens with a private key (RS256); the app verifies them with the public
keys the server publishes (its JWKS), so it holds no secret that could mint one. Its permissions are
named after the service (``items:items:read``) and declared in its manifest, ``items.toml``.

``docs/from-tutorial.md`` walks through the move from ``before/app.py`` to ``after/app.py``.
"""

import os

from fastapi import FastAPI, Security
from pydantic import BaseModel

from chit import Principal, Verifier

ISSUER = os.environ.get("CHIT_ISSUER", "http://127.0.0.1:8700")  # the auth server: it logs users in, signs the tokens

verifier = Verifier(issuer=ISSUER, audience="items")  # only tokens for this service, verified with the JWKS


class Item(BaseModel):
    name: str
    owner: str | None = None


ITEMS: list[Item] = []


app = FastAPI(title="items")


@app.get("/users/me")
async def read_me(principal: Principal = Security(verifier)) -> dict:
    return {"id": principal.subject, "permissions": sorted(principal.permissions)}


@app.get("/items/")
async def read_items(principal: Principal = Security(verifier, scopes=["items:items:read"])) -> list[Item]:
    return ITEMS


@app.post("/items/", status_code=201)
async def create_item(item: Item, principal: Principal = Security(verifier, scopes=["items:items:write"])) -> Item:
    item = Item(name=item.name, owner=principal.subject)
    ITEMS.append(item)
    return item
