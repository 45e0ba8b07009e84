"""``chit demo``: the auth server and every example service started on the embedded defaults, provisioned,
walked through request by request; then left running with ready-made ``curl`` lines, or stopped
(``--once``, exit 1 when a step's decision is not the expected one)."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape

import chit
from chit.demo.processes import DemoError, Process, assign_ports, python, start_all, stop_all, uvicorn
from chit.demo.provision import SERVICES, USERS, ExampleService, Provisioned, check_examples, password_of, provision
from chit.demo.walkthrough import World, run

AUTH_SERVER = "auth server"
SERVERS = [service for service in SERVICES if service.module is not None]  # the archiver is a job, run by a step


def _interrupt(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl+C does: every process it started


def find_examples(given: Path | None) -> Path:
    """``--examples``, else ``./examples``, else the examples/ of the checkout chit runs from."""
    if given is not None:
        return given
    here = Path.cwd() / "examples"
    checkout = Path(chit.__file__).resolve().parents[2] / "examples"
    return here if here.is_dir() or not checkout.is_dir() else checkout


def parse_service_ports(values: list[str] | None) -> dict[str, int]:
    known = {service.id for service in SERVERS}
    ports: dict[str, int] = {}
    for value in values or []:
        name, _, number = value.partition("=")
        if name not in known or not number.isdigit() or not 0 < int(number) < 65536:
            raise typer.BadParameter(f"{value!r}: give SERVICE=PORT, SERVICE one of {', '.join(sorted(known))}")
        ports[name] = int(number)
    return ports


def service_env(service: ExampleService, issuer: str, urls: dict[str, str], provisioned: Provisioned) -> dict[str, str]:
    """What a deployment gives an example service: the issuer, its client secret, where the services it
    calls listen, and its service key if it signs chits."""
    env = {
        "CHIT_ISSUER": issuer,
        service.id.upper().replace("-", "_") + "_CLIENT_SECRET": provisioned.secrets[service.id],
        "IMAGE_STORE_URL": urls["image-store"],
        "TAGGING_URL": urls["tagging"],
        "PAYMENT_URL": urls["payment"],
        "EMAIL_URL": urls["email"],
        "IMAGE_STORE_JOBS_EVERY": "1",  # queued tagging jobs run within a second, for the walkthrough
    }
    if service.id in provisioned.service_keys:
        env |= {"CHIT_SERVICE_ID": service.id, "CHIT_SERVICE_KEY": provisioned.service_keys[service.id]}
    return env


def try_it(console: Console, issuer: str, urls: dict[str, str], admin_password: str | None) -> None:
    """Where everything listens, and curl lines to go on by hand."""
    console.print()
    console.rule("[bold]Running: Ctrl+C stops every process[/]", align="left")
    console.print(f"  {'auth server':<12} {issuer}")
    for name, url in urls.items():
        console.print(f"  {name:<12} {url}")
    users = ", ".join(f"{name} ({password_of(name)})" for name in USERS)
    console.print(f"  users        {escape(users)}")
    if admin_password:
        console.print(f"  super admin  admin ({escape(admin_password)})")
    console.print("\nTry it (bob's photos, a new photo, a checkout):\n")
    login = (
        "TOKEN=$(curl -s -d grant_type=password -d client_id=chit-cli -d username=bob "
        f"-d password={password_of('bob')} {issuer}/oauth2/token \\\n"
        "  | python3 -c 'import json, sys; print(json.load(sys.stdin)[\"access_token\"])')"
    )
    lines = [
        login,
        f'curl -s -H "Authorization: Bearer $TOKEN" {urls["image-store"]}/images',
        f'curl -s -X PUT -H "Authorization: Bearer $TOKEN" "{urls["image-store"]}/images/cat?title=Cat%20in%20Rome"',
        f'curl -s -X POST -H "Authorization: Bearer $TOKEN" {urls["cart"]}/checkout',
        f'curl -s -H "Authorization: Bearer $TOKEN" {urls["cart"]}/orders',
    ]
    for line in lines:
        console.print(escape(line), soft_wrap=True, highlight=False)


def watch(processes: list[Process]) -> Process:
    """Wait until a process ends on its own (Ctrl+C ends the wait first): the one that did."""
    while True:
        for process in processes:
            if not process.running:
                return process
        time.sleep(0.5)


def demo(
    once: Annotated[
        bool, typer.Option("--once", help="Stop after the walkthrough; exit 1 if a decision was not the expected one.")
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(
            "--port", min=1, max=65535, help="The auth server's port (default: a free one).", show_default=False
        ),
    ] = None,
    service_port: Annotated[
        list[str] | None,
        typer.Option(
            "--service-port",
            metavar="SERVICE=PORT",
            help="A service's port, e.g. image-store=8701 (repeatable; default: free ones).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Keep the installation here (new or empty); default: a temporary directory, removed at the end.",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        Path | None,
        typer.Option("--examples", help="chit's examples/ folder (default: ./examples).", show_default=False),
    ] = None,
) -> None:
    """Start the auth server and the example services (the photo platform and the shop) on the embedded
    defaults, provision users, services and roles, and walk through requests allowed and refused, with
    who made each, through which services, and why it was decided so."""
    console = Console(highlight=False, emoji=False)
    began = time.monotonic()
    given_ports = parse_service_ports(service_port)
    # Ctrl+C and SIGTERM stop the demo and what it started, even where SIGINT came ignored (a background job)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    scratch = Path(tempfile.mkdtemp(prefix="chit-demo-")) if data_dir is None else None
    processes: list[Process] = []
    failed = False
    try:
        folder = find_examples(examples).resolve()
        check_examples(folder)
        options = {AUTH_SERVER: "--port"} | {s.id: f"--service-port {s.id}=..." for s in SERVERS}
        ports = assign_ports({AUTH_SERVER: port} | {s.id: given_ports.get(s.id) for s in SERVERS}, options)
        data = scratch / "chit-data" if scratch is not None else Path(str(data_dir)).resolve()
        issuer = f"http://127.0.0.1:{ports[AUTH_SERVER]}"
        console.print(f"chit {chit.__version__} demo: data in {data}")
        provisioned = provision(data, ports[AUTH_SERVER], folder)
        logs = data / "logs"
        logs.mkdir(exist_ok=True)
        serve = python("-m", "chit", "serve", "--data-dir", str(data), "--port", str(ports[AUTH_SERVER]))
        server = Process(AUTH_SERVER, serve, ports[AUTH_SERVER], logs / "chit-serve.log", "/healthz")
        processes.append(server)
        start_all([server])
        urls = {s.id: f"http://127.0.0.1:{ports[s.id]}" for s in SERVERS}
        services = [
            Process(
                s.id,
                uvicorn(s.module or "", folder / s.system, ports[s.id]),
                ports[s.id],
                logs / f"{s.id}.log",
                "/openapi.json",
                env=service_env(s, issuer, urls, provisioned),
            )
            for s in SERVERS
        ]
        processes += services
        start_all(services)
        elapsed = time.monotonic() - began
        console.print(
            f"Started the auth server and {len(services)} services in {elapsed:.1f} s (logs in {logs})", soft_wrap=True
        )
        with httpx.Client(timeout=30) as http:
            results = run(console, World(issuer, urls, provisioned, folder, http))
        wrong = [result for result in results if not result.as_expected]
        console.print()
        if wrong:
            failed = True
            console.print(f"[bold red]{len(wrong)} of {len(results)} steps did not go as expected[/]")
        else:
            console.print(f"[bold green]All {len(results)} steps were decided as expected[/]")
        if once:
            raise typer.Exit(1 if failed else 0)  # a bare return would skip the exit code below
        try_it(console, issuer, urls, provisioned.admin_password)
        ended = watch(processes)
        failed = True
        console.print(f"[bold red]{escape(ended.name)} stopped unexpectedly:[/]\n{escape(ended.log_tail())}")
    except DemoError as exc:
        failed = True
        console.print(f"[bold red]chit demo:[/] {escape(str(exc))}")
    except KeyboardInterrupt:
        console.print("\nStopping…")
    finally:
        stop_all(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if processes:
            count = len(processes)
            console.print(f"Stopped the {count} processes the demo started" if count > 1 else "Stopped the auth server")
        if scratch is not None and not (failed and processes):  # logs to keep only once a process ran
            shutil.rmtree(scratch, ignore_errors=True)
        elif scratch is not None:
            console.print(f"(logs kept in {scratch / 'chit-data' / 'logs'})")
    if failed:
        raise typer.Exit(1)
