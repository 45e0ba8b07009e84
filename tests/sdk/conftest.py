"""Fixtures of the SDK's tests: anyio on asyncio, a clock moved by hand, an in-process issuer on it."""

import pytest

from chit.testing import Clock, TestIssuer

START = 1_800_000_000  # where the clock starts: 2027-01-15T08:00:00Z


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> Clock:
    """A clock the test moves by hand, shared by the issuer, its verifiers and its identities."""
    return Clock(START)


@pytest.fixture
def issuer_url() -> str:
    """The issuer's URL; a module that needs another overrides this fixture."""
    return "https://issuer.chit.test"


@pytest.fixture
def issuer(issuer_url: str, clock: Clock) -> TestIssuer:
    """An in-process issuer on ``clock`` (EdDSA keys, access tokens for 600 s, JWKS max-age 300 s:
    the tests count on these figures, so they are spelled here rather than left to the defaults)."""
    return TestIssuer(issuer_url, clock=clock, access_token_ttl=600, jwks_max_age=300)
