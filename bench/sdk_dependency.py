"""Benchmark: the FastAPI dependency's own work for a token seen before, in process, against its general path.

One process, one core, no HTTP: ``Verifier.__call__`` is driven by hand as FastAPI awaits it (for a
token in the cache it never suspends), with a ``SecurityScopes`` and a Starlette ``Request`` over an
ASGI scope that carries the request's exit stack, closed after each call as FastAPI closes it. The
token comes from the test kit's in-process issuer (``chit.testing.TestIssuer``, EdDSA) and is verified
once before timing. Three variants, interleaved in every round:

* ``dependency``: ``Verifier.__call__`` as shipped: the ``Authorization`` value looked up among those
  seen before (``token_of``), the principal without a coroutine (``verify_cached``), the route's
  permissions held word for word without building decisions (``authorize``, allows not logged), the
  binding ended by an exit-stack entry (``context.Unbinding``);
* ``general path``: the same decisions through the general calls, as the dependency made them before
  (the header values decoded and parsed by ``bearer_token``, ``await verify``, ``Principal.for_request``
  building a decision per permission and handing it to the decision log, ``stack.callback(unbind, ...)``);
* ``nothing``: a dependency that returns a constant: the floor of the harness (a scope, a request, an
  exit stack, a coroutine), subtracted from the two others.

Each figure is the median over rounds of the mean over a batch, in this process's CPU time with the
garbage collector off during a batch. Under HTTP load a call costs several times what it does here
(bench/sdk_endpoint.py: the interpreter's caches are shared with the server's own work); the ratio
between the variants is the reading.

    .venv/bin/python bench/sdk_dependency.py --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from benchinfo import chit_source, load_average, versions
from fastapi.security import SecurityScopes
from starlette.requests import Request

from chit import Principal, Verifier
from chit.answers import bearer_token
from chit.sdk import context
from chit.testing import TestIssuer

AUDIENCE = "image-store"
PERMISSION = "image-store:images:read"
TIMES = "\u00d7"
Dependency = Callable[[SecurityScopes, Request], Coroutine[Any, Any, Any]]


def general_path(verifier: Verifier) -> Dependency:
    """The dependency's steps through the general calls."""

    async def dependency(security_scopes: SecurityScopes, request: Request) -> Principal:
        scopes = security_scopes.scopes
        scope = request.scope
        authorization = [value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"]
        token = bearer_token(authorization)
        principal = await verifier.verify(token)
        principal = principal.for_request(scopes, method=scope["method"], path=scope["path"])
        verifier.stats.allowed += 1
        bound = context.bind(principal, token)
        stack = scope.get("fastapi_inner_astack")
        if isinstance(stack, AsyncExitStack):
            stack.callback(context.unbind, bound)
        return principal

    return dependency


async def nothing(security_scopes: SecurityScopes, request: Request) -> str:
    return "x"


def finish(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends to its end, as an event loop would in one step."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the dependency suspended: the token was not answered from the cache")


def batch_us(dependency: Dependency, token: str, size: int) -> float:
    security_scopes = SecurityScopes([PERMISSION])
    headers = [(b"host", b"image-store.internal"), (b"authorization", f"Bearer {token}".encode())]
    gc.disable()
    try:
        started = time.process_time()
        for _ in range(size):
            stack = AsyncExitStack()
            scope = {"type": "http", "method": "GET", "path": "/images/1", "headers": headers}
            scope["fastapi_inner_astack"] = stack
            finish(dependency(security_scopes, Request(scope)))
            finish(stack.aclose())
        return (time.process_time() - started) / size * 1e6
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=20_000)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 50 or not 100 <= args.batch <= 1_000_000:
        parser.error("keep --rounds within 1-50 and --batch within 100-1000000")
    load_before = load_average()
    issuer = TestIssuer("https://issuer.bench.test", alg="EdDSA")
    verifier = issuer.verifier(AUDIENCE)
    token = issuer.token("usr_bench", [PERMISSION])
    variants: dict[str, Dependency] = {
        "dependency": verifier.__call__,
        "general path": general_path(verifier),
        "nothing": nothing,
    }
    asyncio.run(verifier.verify(token))  # verified once: every call below is answered from the cache
    for dependency in variants.values():  # warm-up
        batch_us(dependency, token, 1000)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, dependency in variants.items():
            samples[name].append(batch_us(dependency, token, args.batch))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["nothing"]
    own = {name: medians[name] - floor for name in ("dependency", "general path")}
    print(f"### The FastAPI dependency's own work, a token seen before ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    print()
    print(
        f"`python bench/sdk_dependency.py --rounds {args.rounds} --batch {args.batch}`: CPU µs per call, median "
        f"over {args.rounds} interleaved rounds of {args.batch:,} calls, one process (load average {load_before} "
        f"before, {load_average()} after); EdDSA token from `TestIssuer`; {versions()}; {chit_source()}."
    )
    print()
    print("| variant | µs per call | each round | own µs (less `nothing`) |")
    print("|---|---:|---|---:|")
    for name, values in samples.items():
        rounds = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {medians[name]:.2f} | {rounds} | {own.get(name, 0.0):.2f} |")
    print()
    print(
        f"The dependency's own work: **{own['dependency']:.2f} µs**, "
        f"{own['dependency'] / own['general path']:.2f}{TIMES} the general path's {own['general path']:.2f} µs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
