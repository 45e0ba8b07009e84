"""The Biscuit root key of the auth server. The only module that imports ``biscuit_auth``."""

from __future__ import annotations

import biscuit_auth

from chit.errors import ConfigurationError


def generate_root_private_key() -> str:
    """A new Ed25519 root key in biscuit's text form ``ed25519-private/<hex>`` (a secret)."""
    return str(biscuit_auth.KeyPair().private_key)


def root_public_key(private_text: str) -> str:
    """The public half, ``ed25519/<hex>``, as published in ``biscuit_public_keys``."""
    try:
        private = biscuit_auth.PrivateKey(private_text.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigurationError("the biscuit root key file is corrupt") from exc
    return str(biscuit_auth.KeyPair.from_private_key(private).public_key)


def describe(token: str, public_keys: list[str]) -> list[str] | None:
    """The datalog source of each block of a chit verified by one of ``public_keys``, or None."""
    for text in public_keys:
        try:
            biscuit = biscuit_auth.Biscuit.from_base64(token, biscuit_auth.PublicKey(text))
        except Exception:  # noqa: S112 - biscuit_auth has no common error base; wrong key or not a chit
            continue
        return [biscuit.block_source(i) for i in range(biscuit.block_count())]
    return None
