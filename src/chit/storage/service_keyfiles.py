"""Private service keys waiting in the data directory to be handed over once (DESIGN §4, Service keys).

Layout (directory 0700, files 0600)::

    service-keys/<service id>.key    ``ed25519-private/<hex>``, until ``chit service key`` hands it over

A new key is staged under a name of its own before the database stores its public half, and put in
place only once that committed; handing over renames the file away before reading it, so that two
concurrent calls never both get it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from chit.errors import RefusedError
from chit.policy.manifest import SERVICE_ID

DIRECTORY = "service-keys"


class ServiceKeyFiles:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / DIRECTORY

    def path(self, service_id: str) -> Path:
        if not SERVICE_ID.match(service_id):  # the id becomes a file name: nothing may lead out of the directory
            raise RefusedError(f"not a service id: {service_id[:60]!r}")
        return self.dir / f"{service_id}.key"

    def waiting(self, service_id: str) -> bool:
        return self.path(service_id).exists()

    def stage(self, service_id: str, private_key: str) -> Path:
        """Write a private key under a fresh name next to its final one; ``place`` or ``discard`` it."""
        target = self.path(service_id)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        staged = target.with_name(f"{target.name}.{secrets.token_hex(8)}.staged")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, private_key.encode())
            os.fsync(fd)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return staged

    def place(self, staged: Path, service_id: str) -> None:
        os.replace(staged, self.path(service_id))

    def discard(self, staged: Path) -> None:
        staged.unlink(missing_ok=True)

    def take(self, service_id: str) -> str | None:
        """The waiting private key, removed from the directory; None when none waits."""
        target = self.path(service_id)
        claimed = target.with_name(f"{target.name}.{secrets.token_hex(8)}.taken")
        try:
            os.rename(target, claimed)  # atomic: of two concurrent calls, one finds nothing
        except FileNotFoundError:
            return None
        try:
            return claimed.read_text().strip()
        finally:
            claimed.unlink(missing_ok=True)

    def remove(self, service_id: str) -> None:
        """Forget the waiting private key, if any (it no longer matches the published key)."""
        self.path(service_id).unlink(missing_ok=True)
