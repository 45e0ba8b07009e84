"""An items app of the shape of FastAPI's "OAuth2 scopes" security tutorial, before it moves onto chit.

One process does everything: it keeps the users and their password hashes, logs them in with the password
flow at ``/token``, signs tokens with a secret of its own (HS256) and checks their scopes on every route.
Every other service that wanted to accept these tokens would need the same secret, which could then also
mint them.

``docs/from-tutorial.md`` walks through the move from ``before/app.py`` to ``after/app.py``.
"""

from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm, SecurityScopes
from pydantic import BaseModel

SECRET_KEY = "change-me-and-share-me-with-every-service"  # signs and verifies: whoever verifies can also mint
ALGORITHM = "HS256"
TOKEN_LIFETIME = timedelta(minutes=15)

oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl="token", scopes={"items:read": "List the items", "items:write": "Add an item"}
)
hasher = PasswordHasher()

USERS = {
    "alice": {
        "username": "alice",
        "full_name": "Alice Liddell",
        "password_hash": hasher.hash("alice-password"),  # a real app stores only the hash
        "scopes": ["items:read", "items:write"],
    },
    "bob": {
        "username": "bob",
        "full_name": "Bob Builder",
        "password_hash": hasher.hash("bob-password"),
        "scopes": ["items:read"],
    },
}


class User(BaseModel):
    username: str
    full_name: str
    scopes: list[str]


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class Item(BaseModel):
    name: str
    owner: str | None = None


ITEMS: list[Item] = []


def authenticate(username: str, password: str) -> User | None:
    record = USERS.get(username)
    try:  # an unknown user is hashed against too, so that timing does not tell which users exist
        hasher.verify(record["password_hash"] if record else USERS["alice"]["password_hash"], password)
    except VerificationError:
        return None
    return User(**record) if record else None


def unauthorized(detail: str, security_scopes: SecurityScopes) -> HTTPException:
    challenge = f'Bearer scope="{security_scopes.scope_str}"' if security_scopes.scopes else "Bearer"
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


async def get_current_user(security_scopes: SecurityScopes, token: str = Depends(oauth2_scheme)) -> User:
    """The user the token names, holding every scope the route asks for (``Security(..., scopes=...)``)."""
    try:
        claims = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.InvalidTokenError:
        raise unauthorized("Invalid token", security_scopes) from None
    record = USERS.get(claims["sub"])
    if record is None:  # the user was removed after the token was issued
        raise unauthorized("Invalid token", security_scopes)
    granted = claims.get("scope", "").split()
    missing = [scope for scope in security_scopes.scopes if scope not in granted]
    if missing:
        challenge = f'Bearer error="insufficient_scope", scope="{security_scopes.scope_str}"'
        raise HTTPException(403, f"Missing scope {missing[0]}", headers={"WWW-Authenticate": challenge})
    return User(**record)


app = FastAPI(title="items")


@app.post("/token")
async def login(form: OAuth2PasswordRequestForm = Depends()) -> Token:
    """The password flow: a token carrying the scopes asked for that the user holds (all of them if none asked)."""
    user = authenticate(form.username, form.password)
    if user is None:
        raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Bearer"})
    scopes = [scope for scope in form.scopes if scope in user.scopes] if form.scopes else user.scopes
    expires = datetime.now(UTC) + TOKEN_LIFETIME
    claims = {"sub": user.username, "scope": " ".join(scopes), "exp": expires}
    return Token(access_token=jwt.encode(claims, SECRET_KEY, algorithm=ALGORITHM))


@app.get("/users/me")
async def read_me(user: User = Security(get_current_user)) -> User:
    return user


@app.get("/items/")
async def read_items(user: User = Security(get_current_user, scopes=["items:read"])) -> list[Item]:
    return ITEMS


@app.post("/items/", status_code=201)
async def create_item(item: Item, user: User = Security(get_current_user, scopes=["items:write"])) -> Item:
    item = Item(name=item.name, owner=user.username)
    ITEMS.append(item)
    return item
