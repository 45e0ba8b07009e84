"""Service keys (DESIGN §3.2, §4): the Ed25519 pair with which a service signs the third-party block
that says a chit came through it; the auth server publishes the public halves.

Keys are in biscuit's text forms: ``ed25519/<hex>`` (public) and ``ed25519-private/<hex>`` (a secret).
Made and parsed here, apart from the root keys of ``chit.core.biscuit``, whose cache must not hold them.
"""

from __future__ import annotations

from dataclasses import dataclass

import biscuit_auth

from chit.errors import ConfigurationError, RefusedError

PUBLIC_PREFIX = "ed25519/"
MAX_KEY_TEXT = 200  # longer is not a key: refused before any parsing


@dataclass(frozen=True)
class ServiceKeyPair:
    public_key: str
    private_key: str

    def __repr__(self) -> str:  # the private half stays out of logs and tracebacks
        return f"ServiceKeyPair(public_key={self.public_key!r})"


def new_key_pair() -> ServiceKeyPair:
    pair = biscuit_auth.KeyPair()
    return ServiceKeyPair(str(pair.public_key), str(pair.private_key))


def public_half(private_key: str) -> str:
    """The public key of a private one; a ``ConfigurationError`` for text that is not one."""
    try:
        private = biscuit_auth.PrivateKey(private_key.strip())
    except (ValueError, TypeError):
        raise ConfigurationError("a service key file is corrupt") from None
    return str(biscuit_auth.KeyPair.from_private_key(private).public_key)


def check_public_key(text: str) -> str:
    """A public key a service supplies, as biscuit writes it; a ``RefusedError`` that says what is wrong."""
    expected = "a service's public key is Ed25519, written ed25519/<64 hex digits>"
    candidate = text.strip()
    if len(candidate) > MAX_KEY_TEXT or not candidate.startswith(PUBLIC_PREFIX):
        raise RefusedError(expected)
    try:
        # parsed by the library every verifier uses: what it refuses would break them all
        key = biscuit_auth.PublicKey(candidate)
    except (ValueError, TypeError):
        raise RefusedError(f"not a valid public key: {expected}") from None
    return str(key)
