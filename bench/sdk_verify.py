"""Benchmark: the SDK's verify + authorize per request against a raw PyJWT decode of the same token.

For each algorithm (RS256, ES256, EdDSA) this mints one access token with the test kit's in-process
issuer (``chit.testing.TestIssuer``) and times, in one process, one core, in a running event loop:

* ``pyjwt``: ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=..., options={"require":
  [...]})`` with the public key parsed once, the cheapest correct use of PyJWT (no typ, header,
  size or claim-type checks, no principal);
* ``sdk``: ``principal = await verifier.verify(token); principal.require(permission)`` with the
  verified-token cache off: every check of the SDK, on every call;
* ``sdk cached``: the same with the cache on (the default): the same token again and again;
* ``sdk core``: the framework-free decoder alone (``AccessTokenDecoder.decode``), synchronous.

The variants are interleaved in every round so that the machine's drift hits them alike; each figure
is the median over rounds of the mean over a batch, in CPU time of this process
(``time.process_time``, garbage collector off during a batch), so that time slices lost to other
work on a shared machine do not count. Decision logging is at its default (allows at DEBUG, not
emitted). The targets (issue 4): verify+authorize at most 1.10x a raw PyJWT decode, and under 5 µs
for a token seen before.

    /work/venv/bin/python bench/sdk_verify.py            # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import jwt
from benchinfo import chit_source, load_average, versions

from chit.core.claims import REQUIRED_CLAIMS
from chit.core.keys import Algorithm
from chit.testing import TestIssuer

AUDIENCE = "image-store"
PERMISSION = "image-store:images:read"
SCOPE = [PERMISSION, "image-store:images:write", "tagging:tags:read"]
TIMES = "\u00d7"  # the multiplication sign, in ratios


async def measure(run: Callable[[], Awaitable[None]], batch: int) -> float:
    """Mean CPU µs per call over one batch."""
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(batch):
            await run()
        return (time.process_time() - start) / batch * 1e6
    finally:
        gc.enable()


async def bench_algorithm(alg: Algorithm, rounds: int, batch: int) -> dict[str, float]:
    issuer = TestIssuer("https://auth.example.com", alg=alg)
    token = issuer.token("usr_0123456789abcdef", SCOPE, client_id="web", session_id="rtf_0123456789")
    uncached = issuer.verifier(AUDIENCE, cache_size=0, clock=time.time)
    cached = issuer.verifier(AUDIENCE, clock=time.time)
    await uncached.verify(token)  # loads the keys
    await cached.verify(token)
    public_key = issuer.signing_key.public_key
    decoder, keys = uncached.decoder, uncached.jwks.find

    async def pyjwt() -> None:
        jwt.decode(
            token,
            public_key,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=issuer.issuer,
            options={"require": list(REQUIRED_CLAIMS)},
        )

    async def sdk() -> None:
        (await uncached.verify(token)).require(PERMISSION)

    async def sdk_cached() -> None:
        (await cached.verify(token)).require(PERMISSION)

    async def sdk_core() -> None:
        decoder.decode(token, keys, time.time())

    variants = {"pyjwt": pyjwt, "sdk": sdk, "sdk cached": sdk_cached, "sdk core": sdk_core}
    for run in variants.values():  # warm-up
        await measure(run, batch // 4)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].append(await measure(run, batch))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--algorithms", default="RS256,ES256,EdDSA")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    load_before = load_average()
    results: dict[str, dict[str, float]] = {}
    for alg in args.algorithms.split(","):
        print(f"{alg} ...", file=sys.stderr)
        results[alg] = asyncio.run(bench_algorithm(alg, args.rounds, args.batch))  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"### SDK verify + authorize, per request ({stamp})")
    print()
    print(
        f"`python bench/sdk_verify.py --rounds {args.rounds} --batch {args.batch}`: CPU µs per call, median over "
        f"{args.rounds} interleaved rounds of {args.batch} calls, one process, in a running event loop "
        f"(load average {load_before} before, {load_average()} after); {versions()}; {chit_source()}."
    )
    print()
    print(
        f"| alg | PyJWT `jwt.decode` µs | SDK verify+require, no cache µs | {TIMES} PyJWT "
        f"| SDK core `AccessTokenDecoder.decode` µs | SDK verify+require, cached µs | targets (1.10{TIMES}, 5 µs) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for alg, r in results.items():
        ratio = r["sdk"] / r["pyjwt"]
        row = [
            alg,
            f"{r['pyjwt']:.1f}",
            f"{r['sdk']:.1f}",
            f"{ratio:.2f}{TIMES}",
            f"{r['sdk core']:.1f}",
            f"{r['sdk cached']:.2f}",
            "met" if ratio <= 1.10 and r["sdk cached"] < 5 else "NOT met",
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
