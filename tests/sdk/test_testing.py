"""The test kit users import: clock, issuer with rotating keys, token factories."""

from datetime import UTC, datetime

import pytest

from chit import Actor, InvalidTokenError
from chit.testing import Clock, TestIssuer, make_principal

pytestmark = pytest.mark.anyio


def test_clock_moves_by_hand() -> None:
    clock = Clock(1_000)
    assert clock() == clock.now() == 1_000
    clock.advance(5.5)
    assert clock() == 1_005.5
    clock.set(2_000)
    assert clock.datetime() == datetime.fromtimestamp(2_000, UTC)


async def test_tokens_for_users_services_and_delegation(issuer: TestIssuer) -> None:
    verifier = issuer.verifier("image-store")
    user = await verifier.verify(issuer.token("usr_a", ["image-store:images:read"], session_id="rtf_1"))
    assert (user.subject, user.client_id, user.session_id) == ("usr_a", "test-client", "rtf_1")
    service = await verifier.verify(issuer.service_token("tagging", ["image-store:images:read"]))
    assert (service.subject, service.client_id) == ("tagging", "tagging")
    chain = await verifier.verify(
        issuer.delegated_token("usr_a", ["image-store:images:read"], actors=[Actor("cli_b", "b"), "a"])
    )
    assert chain.actors == (Actor("cli_b", "b"), Actor("a", "a"))
    assert chain.client_id == "b"


def test_claims_default_to_what_the_server_issues_and_overrides_remove() -> None:
    issuer = TestIssuer(clock=Clock(1_000))
    claims = issuer.claims("usr_a", ["image-store:images:read", "tagging:tags:read"], exp=None, nbf=1_010)
    assert claims["aud"] == ["image-store", "tagging"]
    assert "exp" not in claims
    assert claims["nbf"] == 1_010
    assert issuer.claims("usr_a")["aud"] == ["chit"]
    assert issuer.claims("usr_a")["scope"] == ""


async def test_rotation_and_retirement(issuer: TestIssuer, clock: Clock) -> None:
    verifier = issuer.verifier("image-store")
    old = issuer.signing_key
    old_token = issuer.token("usr_a", ["image-store:images:read"])
    upcoming = issuer.rotate(sign_now=False)
    assert issuer.signing_key is old
    assert [k["kid"] for k in issuer.jwks()["keys"]] == [upcoming.kid, old.kid]
    issuer.start_signing(upcoming)
    await verifier.verify(issuer.token("usr_a", ["image-store:images:read"]))
    await verifier.verify(old_token)
    issuer.retire(old)
    clock.advance(3600)
    await verifier.jwks.refresh()
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.verify(issuer.token("usr_a", ["image-store:images:read"], key=old))


def test_make_principal() -> None:
    principal = make_principal("usr_a", ["image-store:images:read"], actors=["tagging"])
    assert principal.can("image-store:images:read")
    assert principal.actors == (Actor("tagging", "tagging"),)
    assert principal.expires_at > datetime.now(UTC)


async def test_the_module_docstring_example_runs() -> None:
    import textwrap

    import chit.testing

    assert chit.testing.__doc__ is not None
    lines = chit.testing.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next(i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith("    "))
    block = textwrap.dedent("\n".join(lines[start:end]))
    assert "TestIssuer" in block
    source = "async def example():\n" + textwrap.indent(block, "    ") + "\n    return locals()\n"
    namespace: dict[str, object] = {}
    exec(source, namespace)  # noqa: S102 - the documented code itself
    done = await namespace["example"]()  # type: ignore[operator]
    assert done["principal"].subject == "usr_alice"
    with pytest.raises(InvalidTokenError, match="expired"):
        await done["verifier"].verify(done["token"])
