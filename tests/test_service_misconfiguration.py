"""Issue 18: an example service started with a bad configuration says what to fix, in a line or three and
without a traceback, and exits non-zero when it cannot work at all; with the auth server away, or its own
secret refused, it keeps running and says what to fix. Every service runs as a real uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ROOT, ChitServer, ModuleServers, ServiceProcess, free_port, register_manifest_file

SHOP = ROOT / "examples" / "shop"
PHOTOS = ROOT / "examples" / "photos"
KEY = "ed25519-private/" + "11" * 32  # a well-formed key the auth server has never seen
SERVICES = [  # (app directory, module, service id)
    (SHOP, "cart", "cart"),
    (SHOP, "payment", "payment"),
    (SHOP, "email_service", "email"),
    (PHOTOS, "image_store", "image-store"),
    (PHOTOS, "tagging", "tagging"),
    (PHOTOS, "moderation", "moderation"),
]


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without any chit setting or client secret, plus ``settings``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_") and not k.endswith("_CLIENT_SECRET")}
    return {**kept, **settings}


def uvicorn(app_dir: Path, module: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(app_dir), "--port", str(free_port())]


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def assert_says_only(output: str, *fragments: str) -> None:
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output


@pytest.mark.parametrize(("app_dir", "module", "service_id"), SERVICES, ids=[s[1] for s in SERVICES])
def test_a_missing_client_secret_ends_the_service_naming_the_fix(app_dir: Path, module: str, service_id: str) -> None:
    variable = service_id.upper().replace("-", "_") + "_CLIENT_SECRET"
    done = run(uvicorn(app_dir, module), environment(CHIT_SERVICE_ID=service_id, CHIT_SERVICE_KEY=KEY))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"chit: {variable} is not set: set it to the client_secret that "
        f"`chit service register {service_id}.toml` printed"
    )
    assert_says_only(done.stdout + done.stderr)


def test_a_missing_client_secret_ends_the_archiver_job_naming_the_fix() -> None:
    done = run([sys.executable, str(PHOTOS / "archiver.py")], environment())
    assert done.returncode == 1
    assert_says_only(done.stderr, "chit: ARCHIVER_CLIENT_SECRET is not set", "`chit service register archiver.toml`")


@pytest.mark.parametrize("service_id", ["cart", "payment"])
def test_a_missing_service_key_ends_the_service_naming_the_fix(service_id: str) -> None:
    secret = {f"{service_id.upper()}_CLIENT_SECRET": "s3cret"}
    done = run(uvicorn(SHOP, service_id), environment(**secret))
    assert done.returncode == 1
    assert_says_only(
        done.stderr, f"CHIT_SERVICE_ID={service_id}", "CHIT_SERVICE_KEY", f"`chit service key {service_id}`"
    )
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_malformed_service_key_ends_the_service_naming_the_fix() -> None:
    done = run(uvicorn(SHOP, "cart"), environment(CART_CLIENT_SECRET="s3cret", CHIT_SERVICE_KEY="ed25519/abc"))
    assert done.returncode == 1
    assert_says_only(done.stderr, "CHIT_SERVICE_KEY does not hold a service key", "`chit service key cart`")


# --- against a running auth server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def shop_server(module_server: ModuleServers) -> tuple[ChitServer, dict[str, str]]:
    """An auth server with the shop's cart and payment registered: it and their secrets."""
    chit = module_server("misconfigured-shop")
    secrets = {name: register_manifest_file(chit, SHOP / f"{name}.toml") for name in ("cart", "payment")}
    return chit, secrets


def service_key(chit: ChitServer, service_id: str) -> str:
    key: str = chit.cli_ok("service", "key", service_id, "--json").json()["private_key"]
    return key


def test_a_service_key_the_auth_server_does_not_publish_ends_the_service(
    shop_server: tuple[ChitServer, dict[str, str]],
) -> None:
    chit, secrets = shop_server
    settings = environment(
        CHIT_ISSUER=chit.url, CART_CLIENT_SECRET=secrets["cart"], CHIT_SERVICE_ID="cart", CHIT_SERVICE_KEY=KEY
    )
    done = run(uvicorn(SHOP, "cart"), settings)
    assert done.returncode == 3  # uvicorn's status for a failed startup
    assert_says_only(
        done.stdout + done.stderr,
        f"the key in CHIT_SERVICE_KEY is not the one registered for cart at {chit.url}",
        "`chit service key cart --rotate`",
        "`chit service register cart.toml --public-key",
    )
    assert "Application startup complete" not in done.stderr  # it never took a request


def log_says(service: ServiceProcess, fragment: str, within: float = 15) -> str:
    """The service's log once it holds ``fragment``, waiting up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while fragment not in (text := service.log_path.read_text(errors="replace")):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    return text


@pytest.fixture
def cart(tmp_path: Path) -> Iterator[ServiceProcess]:
    service = ServiceProcess("cart", SHOP, free_port(), tmp_path / "cart.log")
    try:
        yield service
    finally:
        service.stop()


def test_an_auth_server_out_of_reach_is_named_and_the_service_keeps_trying(cart: ServiceProcess) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cart.env = {
        "CHIT_ISSUER": issuer,
        "CART_CLIENT_SECRET": "s3cret",
        "CHIT_SERVICE_ID": "cart",
        "CHIT_SERVICE_KEY": KEY,
    }
    cart.start()  # it serves (reads only) after the bootstrap's bounded wait
    text = log_says(cart, "serving stale")
    assert_says_only(
        text,
        f"cannot reach the auth server at {issuer} (ConnectError: ",
        "start it with `chit serve`, or set CHIT_ISSUER to its URL; writes are refused until it answers",
    )
    assert cart.process is not None
    assert cart.process.poll() is None  # still running, still trying


def test_a_refused_client_secret_is_named_and_the_service_keeps_trying(
    shop_server: tuple[ChitServer, dict[str, str]], cart: ServiceProcess
) -> None:
    chit, _ = shop_server
    key = service_key(chit, "cart")
    cart.env = {
        "CHIT_ISSUER": chit.url,
        "CART_CLIENT_SECRET": "wrong",
        "CHIT_SERVICE_ID": "cart",
        "CHIT_SERVICE_KEY": key,
    }
    cart.start()
    text = log_says(cart, "serving stale")
    assert_says_only(
        text,
        "the auth server refused cart's client secret: set CART_CLIENT_SECRET to the client_secret that "
        "`chit service register cart.toml` printed",
    )
    assert "is not the one registered" not in text  # its key is the registered one
    assert cart.process is not None
    assert cart.process.poll() is None  # still running, still trying
