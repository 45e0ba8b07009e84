"""The repeatable parameters of a token exchange, ``audience`` and ``resource`` (RFC 8693 §2.1), in a form body.

Each value names one target; repeated, the values add up in order. An empty value is omitted (RFC 6749
§3.1, "parameters sent without a value MUST be treated as if they were omitted") wherever it stands: it
never erases the values before it, which would widen a token meant for one service to every service its
scope names. The unit tests parse bodies with ``parse_form`` and ``targets``; the last test sends such a
body to a real ``chit serve`` and looks at the ``aud`` of what it issues.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from helpers import (
    ACCESS_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    ChitServer,
    ServiceClient,
    access_token,
    claims_of,
    free_port,
    register_service,
    user_token,
)

from chit.errors import InvalidRequestError
from chit.server.forms import MAX_TARGETS, parse_form, targets

PASSWORD = "repeatable-parameters-password"
IMAGE_STORE = """\
id = "image-store"
[permissions]
"images:write" = "Write"
[roles]
owner = ["images:write"]
[on_behalf]
permissions = ["tagging:tags:write", "image-store:images:write"]
"""
TAGGING = """\
id = "tagging"
[permissions]
"tags:write" = "Write tags"
[roles]
editor = ["tags:write"]
"""


def parsed_targets(body: bytes) -> list[str]:
    return targets(parse_form(body))


# --- parse_form and targets --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["audience", "resource"])
def test_repeated_values_add_up_in_order(name: str) -> None:
    body = f"grant_type=x&{name}=tagging&{name}=image-store".encode()
    assert parse_form(body) == {"grant_type": "x", name: "tagging image-store"}
    assert parsed_targets(body) == ["tagging", "image-store"]


@pytest.mark.parametrize("name", ["audience", "resource"])
@pytest.mark.parametrize(
    "query",
    [
        "{name}=tagging&{name}=",
        "{name}=&{name}=tagging",
        "{name}=&{name}=tagging&{name}=",
        "{name}=tagging&{name}=&{name}=&{name}=",
        "{name}&{name}=tagging&{name}",  # no '=' at all: empty values too
        "{name}=&{name}=&{name}=tagging",
    ],
)
def test_an_empty_value_is_omitted_and_keeps_the_earlier_ones(name: str, query: str) -> None:
    body = ("grant_type=x&" + query.format(name=name)).encode()
    assert parse_form(body) == {"grant_type": "x", name: "tagging"}
    assert parsed_targets(body) == ["tagging"]


@pytest.mark.parametrize("name", ["audience", "resource"])
def test_an_empty_value_between_two_keeps_both(name: str) -> None:
    body = f"{name}=tagging&{name}=&{name}=image-store".encode()
    assert parse_form(body) == {name: "tagging image-store"}
    assert parsed_targets(body) == ["tagging", "image-store"]


def test_empty_values_of_both_parameters_keep_the_others() -> None:
    body = b"audience=tagging&resource=&resource=image-store&audience="
    assert parse_form(body) == {"audience": "tagging", "resource": "image-store"}
    assert parsed_targets(body) == ["tagging", "image-store"]


@pytest.mark.parametrize("name", ["audience", "resource"])
def test_only_empty_values_name_no_target(name: str) -> None:
    body = f"grant_type=x&{name}=&{name}=".encode()
    assert parse_form(body) == {"grant_type": "x"}
    assert parsed_targets(body) == []


@pytest.mark.parametrize("name", ["audience", "resource"])
def test_empty_values_do_not_count_toward_the_limit(name: str) -> None:
    body = "&".join([f"{name}="] * (MAX_TARGETS + 5) + [f"{name}=s{n}" for n in range(MAX_TARGETS)]).encode()
    assert parsed_targets(body) == [f"s{n}" for n in range(MAX_TARGETS)]
    with pytest.raises(InvalidRequestError, match=f"more than {MAX_TARGETS}"):
        parse_form(body + f"&{name}=one-too-many".encode())


@pytest.mark.parametrize("name", ["audience", "resource"])
def test_a_value_holding_a_space_is_still_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="without spaces"):
        parse_form(f"{name}=tagging&{name}=image-store+tagging".encode())
    with pytest.raises(InvalidRequestError, match="without spaces"):
        parse_form(f"{name}=&{name}=+".encode())


def test_an_empty_value_of_another_parameter_still_counts_as_a_repetition() -> None:
    # only audience and resource may be repeated; grant_type twice is refused, empty or not
    with pytest.raises(InvalidRequestError, match="repeated"):
        parse_form(b"grant_type=x&grant_type=")
    assert parse_form(b"scope=&grant_type=x") == {"grant_type": "x"}


# --- a token exchange ----------------------------------------------------------------------------------------


def test_an_exchange_with_an_empty_audience_after_a_real_one_stays_narrowed(tmp_path: Path) -> None:
    with ChitServer(tmp_path / "data", free_port()).running() as chit:
        image_store = exchange_setup(chit, tmp_path)
        user = user_token(chit, "alice", PASSWORD)
        assert set(claims_of(image_store.token(user))["aud"]) == {"image-store", "tagging"}  # unnarrowed
        for extra in (
            "&audience=tagging&audience=",
            "&audience=&audience=tagging",
            "&resource=tagging&resource=",
            "&resource=&resource=tagging",
            "&audience=tagging&audience=&resource=",
        ):
            body = f"grant_type={TOKEN_EXCHANGE}&subject_token={user}&subject_token_type={ACCESS_TOKEN_TYPE}{extra}"
            answer = httpx.post(
                chit.token_url,
                content=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                auth=image_store.auth,
                timeout=30,
            )
            assert claims_of(access_token(answer))["aud"] == ["tagging"], extra


def exchange_setup(chit: ChitServer, directory: Path) -> ServiceClient:
    image_store = register_service(chit, directory, "image-store", IMAGE_STORE)
    register_service(chit, directory, "tagging", TAGGING)
    chit.add_user("alice", PASSWORD, "--role", "image-store:owner", "--role", "tagging:editor")
    return image_store
