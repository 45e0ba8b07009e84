"""What a benchmark result needs to be read later: the versions and the chit source it measured."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def versions() -> str:
    import cryptography
    import fastapi
    import jwt
    import starlette
    import uvicorn

    return (
        f"Python {platform.python_version()}, PyJWT {jwt.__version__}, "
        f"cryptography {cryptography.__version__}, FastAPI {fastapi.__version__}, "
        f"Starlette {starlette.__version__}, uvicorn {uvicorn.__version__}"
    )


def chit_source() -> str:
    """Where ``chit`` is imported from and, inside a git work tree, its commit and whether src/ differs."""
    import chit

    package = Path(chit.__file__).resolve().parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(package), *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"chit from {package}"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", str(package))
    return f"chit {commit}{' with uncommitted changes' if changed else ''} from {package}"


def load_average() -> str:
    """The 1-minute load average: other work on the machine, which the ratios have to live with."""
    return f"{os.getloadavg()[0]:.1f}"
