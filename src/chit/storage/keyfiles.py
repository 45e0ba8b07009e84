"""The key files in the data directory: JWT signing keys and the Biscuit root key.

Layout (directory 0700, files 0600)::

    keys/keyset.json        which keys exist and when each signs (no secrets)
    keys/jwt-<kid>.pem      PKCS#8 private keys
    keys/biscuit-<n>.key    Biscuit root private keys, ``ed25519-private/<hex>``; ``n`` is the root key id

Root keys rotate with the JWT keys (``chit keys rotate``), but a new root key mints at once: a chit names
its root key id, and a verifier that does not know the id fetches discovery again. An older root key stays
published for the retention (the longest an access token, hence a chit, can be accepted) after the next one
took over, then it is dropped. A key set written before root keys had ids holds ``biscuit-1.key``: id 1.

A key that may have leaked is retired at once instead (``chit keys rotate --now --revoke-old``): the
rotation leaves only the new keys in the set and deletes every earlier key file. A server process looks
at the set whenever it uses a key (``stamp``), so once the rotation returns none signs with the old keys
or verifies what they signed.

Writers take ``keys/.lock`` and replace ``keyset.json`` atomically, so a server reading the set while
``chit keys rotate`` runs sees the old set or the new one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from chit.core import biscuit
from chit.core.keys import (
    Algorithm,
    KeyRing,
    SigningKey,
    check_algorithm,
    new_signing_key,
    private_key_from_pem,
    private_key_to_pem,
)
from chit.errors import ConfigurationError

KEYSET = "keyset.json"


@dataclass(frozen=True)
class RootKey:
    """A Biscuit root key: chits name its ``id`` so that a verifier picks the published key by id."""

    id: int
    private_key: str  # "ed25519-private/<hex>", a secret
    public_key: str  # "ed25519/<hex>"
    created_at: datetime

    @property
    def revocation_value(self) -> str:
        """How a ``key`` event of the revocation feed names it: ``root-<id>``, apart from any JWT ``kid``."""
        return f"root-{self.id}"

    def __repr__(self) -> str:  # never let the private key reach a log
        return f"RootKey(id={self.id}, public_key={self.public_key!r}, created_at={self.created_at.isoformat()})"


@dataclass(frozen=True)
class LoadedKeys:
    ring: KeyRing
    root_keys: tuple[RootKey, ...]  # newest (highest id) first; the newest mints
    retention: timedelta  # how long a root key stays published after the next one took over

    @property
    def minting_root_key(self) -> RootKey:
        return self.root_keys[0]

    @property
    def biscuit_private_keys(self) -> tuple[str, ...]:
        return tuple(k.private_key for k in self.root_keys)

    @property
    def biscuit_public_keys(self) -> tuple[str, ...]:
        return tuple(k.public_key for k in self.root_keys)

    @property
    def biscuit_public_keys_by_id(self) -> dict[int, str]:
        return {k.id: k.public_key for k in self.root_keys}

    def published_root_keys(self, now: datetime) -> tuple[RootKey, ...]:
        """Newest first: the minting key, and older ones whose chits may still be accepted."""
        return tuple(k for k in self.root_keys if _root_key_published(k, self.root_keys, now, self.retention))


@dataclass(frozen=True)
class Rotation:
    signing_key: SigningKey  # the new JWT key, signing from its ``signs_from``
    root_key: RootKey  # the new Biscuit root key, minting at once
    retired_keys: tuple[SigningKey, ...] = ()  # earlier JWT keys taken out of service (``retire_previous``)
    retired_root_keys: tuple[RootKey, ...] = ()  # earlier root keys taken out of service, newest first


def _root_key_published(key: RootKey, keys: tuple[RootKey, ...], now: datetime, retention: timedelta) -> bool:
    successors = [k.created_at for k in keys if k.id > key.id]
    return not successors or min(successors) + retention > now


def _root_key_id(entry: dict[str, Any]) -> int:
    """An entry's id; a key set written before ids existed names only the file ``biscuit-<n>.key``."""
    if "id" in entry:
        return int(entry["id"])
    name = str(entry["file"])
    digits = name.removeprefix("biscuit-").removesuffix(".key")
    if not digits.isdigit():
        raise ConfigurationError(f"the key set names a biscuit root key file {name!r} without an id")
    return int(digits)


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _dt(value: int) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyStore:
    def __init__(self, data_dir: Path, retention: timedelta) -> None:
        self.dir = data_dir / "keys"
        self.retention = retention
        self._keyset_file = os.fspath(self.dir / KEYSET)  # ``stamp`` runs on every request: no Path built there

    @property
    def keyset_path(self) -> Path:
        return self.dir / KEYSET

    def exists(self) -> bool:
        return self.keyset_path.exists()

    def stamp(self) -> tuple[int, int]:
        """Changes whenever the key set is rewritten: every write replaces the file, so a new inode even
        when two writes fall in one tick of the file system's clock."""
        try:
            found = os.stat(self._keyset_file)
        except FileNotFoundError:
            return 0, 0
        return found.st_ino, found.st_mtime_ns

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def initialize(self, alg: Algorithm, now: datetime) -> bool:
        """Create the first keys; False (and nothing written) when they already exist."""
        with self._locked():
            if self.exists():
                return False
            key = new_signing_key(alg, now)
            self._write_signing_key(key)
            root = biscuit.generate_root_private_key()
            _write_private(self.dir / "biscuit-1.key", root.encode())
            self._write_manifest(
                {
                    "jwt": [self._entry(key)],
                    "biscuit": [{"id": 1, "file": "biscuit-1.key", "created_at": _ts(now)}],
                }
            )
            return True

    def rotate(self, alg: Algorithm, now: datetime, *, delay: timedelta, retire_previous: bool = False) -> Rotation:
        """Publish a new JWT key now, signing from ``now + delay``, and a new root key that mints now;
        forget keys no token can need. With ``retire_previous`` (a key compromise; the new key must sign
        at once) every earlier key goes too, its file deleted: whatever it signed stops verifying."""
        if retire_previous and delay:
            raise ValueError("retiring the previous keys needs the new one to sign at once")
        with self._locked():
            manifest = self._read_manifest()
            if retire_previous:
                return self._replace_every_key(manifest, alg, now)
            signs_from = now + delay
            if delay and signs_from.microsecond:
                # stored in whole seconds: round up, or the key would sign before caches can hold it
                signs_from = signs_from.replace(microsecond=0) + timedelta(seconds=1)
            key = new_signing_key(alg, now, signs_from=signs_from)
            self._write_signing_key(key)
            ring = KeyRing.of([*self._load_signing_keys(manifest), key], self.retention)
            keep = {k.kid for k in ring.published(now)}
            entries = [e for e in manifest["jwt"] if e["kid"] in keep] + [self._entry(key)]
            root_key, root_entries, dropped = self._rotate_root_key(manifest, now)
            self._write_manifest({**manifest, "jwt": entries, "biscuit": root_entries})
            for entry in manifest["jwt"]:
                if entry["kid"] not in keep:
                    (self.dir / entry["file"]).unlink(missing_ok=True)
            for name in dropped:
                (self.dir / name).unlink(missing_ok=True)
            return Rotation(key, root_key)

    def _replace_every_key(self, manifest: dict[str, Any], alg: Algorithm, now: datetime) -> Rotation:
        """A new JWT key signing now and a new root key, and nothing else: on a compromise every key file
        in the directory is suspect, upcoming and retained ones included."""
        retired = tuple(self._load_signing_keys(manifest))
        retired_roots = self._load_root_keys(manifest)
        key = new_signing_key(alg, now)
        self._write_signing_key(key)
        key_id = max(k.id for k in retired_roots) + 1  # never reused: a chit names its root key by id
        name = f"biscuit-{key_id}.key"
        private = biscuit.generate_root_private_key()
        _write_private(self.dir / name, private.encode())
        root_key = RootKey(key_id, private, biscuit.root_public_key(private), _dt(_ts(now)))
        root_entry = {"id": key_id, "file": name, "created_at": _ts(now)}
        self._write_manifest({**manifest, "jwt": [self._entry(key)], "biscuit": [root_entry]})
        # deleted only once the set no longer names them, so that a reader never misses a listed file
        for entry in [*manifest["jwt"], *manifest["biscuit"]]:
            (self.dir / str(entry["file"])).unlink(missing_ok=True)
        return Rotation(key, root_key, retired, retired_roots)

    def _rotate_root_key(
        self, manifest: dict[str, Any], now: datetime
    ) -> tuple[RootKey, list[dict[str, Any]], list[str]]:
        """A new root key written to its file; the manifest entries to keep with it; the files to delete."""
        old = self._load_root_keys(manifest)
        key_id = max((k.id for k in old), default=0) + 1  # never reused: the newest key is always kept
        private = biscuit.generate_root_private_key()
        name = f"biscuit-{key_id}.key"
        _write_private(self.dir / name, private.encode())
        # stored in whole seconds: the key set holds epoch seconds
        key = RootKey(key_id, private, biscuit.root_public_key(private), _dt(_ts(now)))
        keys = (key, *old)
        keep = {k.id for k in keys if _root_key_published(k, keys, now, self.retention)}
        entries = [e for e in manifest["biscuit"] if _root_key_id(e) in keep]
        dropped = [str(e["file"]) for e in manifest["biscuit"] if _root_key_id(e) not in keep]
        entry = {"id": key_id, "file": name, "created_at": _ts(now)}
        return key, [entry, *entries], dropped

    def note_jwks_max_age(self, seconds: int) -> None:
        """Record how long the running server lets caches keep its JWKS, for ``chit keys rotate``."""
        with self._locked():
            manifest = self._read_manifest()
            if manifest.get("jwks_max_age") != seconds:
                self._write_manifest({**manifest, "jwks_max_age": seconds})

    def jwks_max_age(self) -> int:
        """The max-age the server last ran with (0 if unknown)."""
        return int(self._read_manifest().get("jwks_max_age", 0))

    def load(self) -> LoadedKeys:
        try:
            return self._load()
        except FileNotFoundError:
            # a rotation replaced the set and deleted a key file between our reads: the new set names none of them
            return self._load()

    def _load(self) -> LoadedKeys:
        manifest = self._read_manifest()
        ring = KeyRing.of(self._load_signing_keys(manifest), self.retention)
        return LoadedKeys(ring, self._load_root_keys(manifest), self.retention)

    def _load_root_keys(self, manifest: dict[str, Any]) -> tuple[RootKey, ...]:
        """Newest (highest id) first."""
        keys = []
        for entry in manifest["biscuit"]:
            key_id = _root_key_id(entry)
            private = (self.dir / entry["file"]).read_text().strip()
            keys.append(RootKey(key_id, private, biscuit.root_public_key(private), _dt(entry["created_at"])))
        if not keys:
            raise ConfigurationError(f"{self.keyset_path} lists no biscuit root key")
        return tuple(sorted(keys, key=lambda k: k.id, reverse=True))

    def _entry(self, key: SigningKey) -> dict[str, Any]:
        return {
            "kid": key.kid,
            "alg": key.alg,
            "file": f"jwt-{key.kid}.pem",
            "created_at": _ts(key.created_at),
            "signs_from": _ts(key.signs_from),
        }

    def _write_signing_key(self, key: SigningKey) -> None:
        _write_private(self.dir / f"jwt-{key.kid}.pem", private_key_to_pem(key.private_key))

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        _write_private(self.keyset_path, json.dumps(manifest, indent=2, sort_keys=True).encode())

    def _read_manifest(self) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(self.keyset_path.read_text())
        except FileNotFoundError as exc:
            raise ConfigurationError(f"no keys in {self.dir}; run `chit serve` once to create them") from exc
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {self.keyset_path}: {exc}") from exc
        return manifest

    def _load_signing_keys(self, manifest: dict[str, Any]) -> list[SigningKey]:
        keys = []
        for entry in manifest["jwt"]:
            alg = check_algorithm(entry["alg"])
            pem = (self.dir / entry["file"]).read_bytes()
            keys.append(
                SigningKey(
                    entry["kid"],
                    alg,
                    private_key_from_pem(pem, alg),
                    _dt(entry["created_at"]),
                    _dt(entry["signs_from"]),
                )
            )
        return keys
