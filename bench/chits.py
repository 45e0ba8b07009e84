"""Benchmark: chits (Biscuit tokens) through chit's code against raw ``biscuit_auth`` doing the same work,
and JWT verification in the same run.

One process, one core, in a running event loop; every variant is timed in every round, interleaved, so
that the machine's drift hits them alike. Each figure is the median over rounds of the mean CPU µs per
call over a batch (``time.process_time``, garbage collector off during a batch); each ratio to raw
``biscuit_auth`` (or PyJWT) is the median over rounds of that round's ratio. Variants:

* mint: ``chit.core.biscuit.mint`` (the auth server's) against ``BiscuitBuilder(<the same datalog and
  parameters>).set_root_key_id(1).build(key).to_base64()``, the private key parsed once for both;
* attenuate a chit from its text: ``chit.attenuate(token, operations=[p], public_keys=[root])`` (parse and
  verify, append, serialize) against ``Biscuit.from_base64(token, root).append(BlockBuilder(<the same two
  checks>)).to_base64()``;
* attenuate one hop, as a service does before calling the next: in a request bound to the verified chit
  (``chit.sdk.context``), ``ChitForwarder(operations=[p]).bearer(request)`` (append, serialize: the chit was
  verified when the request came in) against ``parsed.append(BlockBuilder(<the same two checks>)).to_base64()``
  on a ``Biscuit`` parsed once;
* verify + authorize a chit of 1, 3, 5 and 10 blocks (each appended block narrows it as a service
  would: operations, then service, resource-free checks and lifetimes, all still allowing the request):
  ``sdk``: ``verifier.authorize(await verifier.verify(token), [p], method="GET", path=...)`` with the
  verified-token cache off and the authorizer's decision memo emptied before each call (the blocks already
  read are remembered, as for chits that share their first blocks); ``sdk cold``: the same with the
  memo of blocks read emptied too (everything on every call); ``sdk cached``: the same with the default
  cache (the same token again and again);
  ``raw``: ``Biscuit.from_base64(token, root)``, an ``AuthorizerBuilder`` with the same ambient facts,
  check, policy and limits, ``set_time()``, ``build(token).authorize()``;
* token size: characters of base64url, bytes decoded;
* JWT: the SDK's ``verify`` + ``require`` (cache off) and PyJWT's ``jwt.decode`` on an access token of
  the same permissions, as ``sdk_verify.py`` measures them.

Targets (issue 16): chit's wrapper within 1.10x raw ``biscuit_auth``; attenuation under 150 µs per hop;
a cached chit under 5 µs.

    .venv/bin/python bench/chits.py --rounds 7       # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import biscuit_auth
import httpx
import jwt
from benchinfo import chit_source, load_average, versions

import chit
from chit.core import biscuit as server_biscuit
from chit.core.chit_blocks import forget_blocks
from chit.core.claims import REQUIRED_CLAIMS
from chit.core.keys import Algorithm
from chit.sdk import context
from chit.testing import TestIssuer

AUDIENCE = "image-store"
PERMISSION = "image-store:images:read"
SCOPE = [PERMISSION, "image-store:images:write", "tagging:tags:read"]
METHOD, PATH = "GET", "/images/7"
BLOCKS = (1, 3, 5, 10)
TIMES = "\u00d7"
Run = Callable[[], Awaitable[None]]


async def measure(run: Run, batch: int) -> float:
    """Mean CPU µs per call over one batch."""
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(batch):
            await run()
        return (time.process_time() - start) / batch * 1e6
    finally:
        gc.enable()


def narrowed(token: str, blocks: int, root: str) -> str:
    """``token`` with ``blocks - 1`` attenuation blocks, each still allowing the benchmark's request."""
    hops: list[dict[str, Any]] = [
        {"operations": [PERMISSION, "image-store:images:write"]},
        {"service": AUDIENCE},
        {"path": "/images/*"},
        {"method": METHOD},
        {"ttl": 3000},
    ]
    for index in range(blocks - 1):
        token = chit.attenuate(token, public_keys=[root], **hops[index % len(hops)])
    return token


def raw_authorizer_code() -> tuple[str, dict[str, Any]]:
    """The SDK's authorizer for the benchmark's request, as datalog: ambient facts, check, policy."""
    code = (
        "service({service}); operation({op}); method({method}); path({path});"
        "check if right({op}); allow if right($r), $r.starts_with({prefix});"
    )
    return code, {"service": AUDIENCE, "op": PERMISSION, "method": METHOD, "path": PATH, "prefix": AUDIENCE + ":"}


async def bench(alg: Algorithm, rounds: int, batch: int) -> dict[str, Any]:
    issuer = TestIssuer("https://auth.example.com", alg=alg, access_token_ttl=3600)
    root = issuer.root_key.public_key
    root_key = biscuit_auth.PublicKey(root)
    private_text = issuer.root_key.private_key
    private_key = biscuit_auth.PrivateKey(private_text)
    base = issuer.chit("usr_0123456789abcdef", SCOPE, client_id="web")
    chits = {n: narrowed(base, n, root) for n in BLOCKS}
    jwt_token = issuer.token("usr_0123456789abcdef", SCOPE, client_id="web", session_id="rtf_0123456789")
    uncached = issuer.verifier(AUDIENCE, cache_size=0, clock=time.time)
    cached = issuer.verifier(AUDIENCE, clock=time.time)
    for token in (*chits.values(), jwt_token):  # loads the keys; checks every chit is allowed
        for verifier in (uncached, cached):
            uncached.authorize(await verifier.verify(token), [PERMISSION], method=METHOD, path=PATH)
    outcomes: dict[Any, Any] = uncached.chits._outcomes  # the decision memo, emptied for "everything every call"
    code, params = raw_authorizer_code()
    limits_builder: Any = biscuit_auth.AuthorizerBuilder()
    run_limits = limits_builder.limits()
    run_limits.max_time = timedelta(milliseconds=20)
    expires_at = int(time.time()) + 3600
    mint_values: dict[str, Any] = {
        "iss": issuer.issuer,
        "sub": "usr_0123456789abcdef",
        "client": "web",
        "exp": datetime.fromtimestamp(expires_at, UTC),
    }
    mint_lines = ["issuer({iss});", "subject({sub});", "client({client});"]
    for index, permission in enumerate(sorted(SCOPE)):
        mint_lines.append(f"right({{r{index}}});")
        mint_values[f"r{index}"] = permission
    mint_lines.append("check if time($t), $t <= {exp};")
    mint_code = "\n".join(mint_lines)
    jwt_key = issuer.signing_key.public_key

    async def chit_mint() -> None:
        server_biscuit.mint(
            private_text,
            1,
            issuer=issuer.issuer,
            subject="usr_0123456789abcdef",
            client_id="web",
            permissions=SCOPE,
            actors=(),
            expires_at=expires_at,
        )

    async def raw_mint() -> None:
        builder = biscuit_auth.BiscuitBuilder(mint_code, mint_values)
        builder.set_root_key_id(1)
        builder.build(private_key).to_base64()

    ops = {PERMISSION}

    async def chit_attenuate() -> None:
        chit.attenuate(base, operations=[PERMISSION], public_keys=[root])

    async def raw_attenuate() -> None:
        block = biscuit_auth.BlockBuilder(
            "check all operation($op), {ops}.contains($op); check if service({s});", {"ops": ops, "s": AUDIENCE}
        )
        biscuit_auth.Biscuit.from_base64(base, root_key).append(block).to_base64()

    # one hop as a service makes it: the request's chit, verified when the request came in, attenuated by a
    # ``ChitForwarder`` for the outgoing call (the binding is made and ended per call, as a request would)
    hop_principal = await uncached.verify(base)
    forwarder = chit.ChitForwarder(operations=[PERMISSION])
    outgoing = httpx.Request("GET", "http://payment.internal/charges")
    parsed_base = biscuit_auth.Biscuit.from_base64(base, root_key)

    async def chit_hop() -> None:
        bound = context.bind(hop_principal, base)
        try:
            forwarder.bearer(outgoing)
        finally:
            context.unbind(bound)

    async def raw_hop() -> None:
        block = biscuit_auth.BlockBuilder(
            "check all operation($op), {ops}.contains($op); check if service({s});", {"ops": ops, "s": AUDIENCE}
        )
        parsed_base.append(block).to_base64()

    def chit_runs(token: str) -> dict[str, Run]:
        async def sdk() -> None:
            outcomes.clear()
            uncached.authorize(await uncached.verify(token), [PERMISSION], method=METHOD, path=PATH)

        async def sdk_cold() -> None:
            outcomes.clear()
            forget_blocks()
            uncached.authorize(await uncached.verify(token), [PERMISSION], method=METHOD, path=PATH)

        async def sdk_cached() -> None:
            cached.authorize(await cached.verify(token), [PERMISSION], method=METHOD, path=PATH)

        async def raw() -> None:
            parsed = biscuit_auth.Biscuit.from_base64(token, root_key)
            builder: Any = biscuit_auth.AuthorizerBuilder(code, params)
            builder.set_limits(run_limits)
            builder.set_time()
            builder.build(parsed).authorize()

        return {"sdk": sdk, "sdk cold": sdk_cold, "sdk cached": sdk_cached, "raw": raw}

    async def jwt_sdk() -> None:
        (await uncached.verify(jwt_token)).require(PERMISSION)

    async def jwt_pyjwt() -> None:
        jwt.decode(
            jwt_token,
            jwt_key,
            algorithms=[alg],
            audience=AUDIENCE,
            issuer=issuer.issuer,
            options={"require": list(REQUIRED_CLAIMS)},
        )

    variants: dict[str, Run] = {
        "mint chit": chit_mint,
        "mint raw": raw_mint,
        "attenuate chit": chit_attenuate,
        "attenuate raw": raw_attenuate,
        "hop chit": chit_hop,
        "hop raw": raw_hop,
        "jwt sdk": jwt_sdk,
        "jwt pyjwt": jwt_pyjwt,
    }
    for n, token in chits.items():
        for name, run in chit_runs(token).items():
            variants[f"{n} {name}"] = run
    for run in variants.values():  # warm-up
        await measure(run, max(1, batch // 4))
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for number in range(rounds):
        print(f"round {number + 1}/{rounds}", file=sys.stderr)
        for name, run in variants.items():
            samples[name].append(await measure(run, batch))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    sizes = {n: (len(token), len(base64.urlsafe_b64decode(token))) for n, token in chits.items()}
    return {"medians": medians, "sizes": sizes, "samples": samples}


def ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """The median over rounds of each round's ratio of ``name`` to ``baseline`` (both measured in that round):
    the machine's drift between rounds cancels out, as in the other benchmarks."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[baseline], strict=True))


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=300)
    parser.add_argument("--alg", default="EdDSA", help="the JWT's signing algorithm (chits are Ed25519)")
    args = parser.parse_args()
    load_before = load_average()
    result = asyncio.run(bench(args.alg, args.rounds, args.batch))
    m: dict[str, float] = result["medians"]
    samples: dict[str, list[float]] = result["samples"]
    sizes: dict[int, tuple[int, int]] = result["sizes"]
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"### Chits: mint, attenuate, verify + authorize, beside raw biscuit_auth and JWT ({stamp})")
    print()
    print(
        f"`python bench/chits.py --rounds {args.rounds} --batch {args.batch} --alg {args.alg}`: CPU µs per call, "
        f"median over {args.rounds} interleaved rounds of {args.batch} calls ({TIMES} raw: the median of the "
        f"rounds' ratios), one process, in a running event loop "
        f"(load average {load_before} before, {load_average()} after); {versions()}, "
        f"biscuit-python {getattr(biscuit_auth, '__version__', '0.4.0')}; {chit_source()}."
    )
    print()
    print(f"| operation | chit µs | raw biscuit_auth µs | chit {TIMES} raw | target |")
    print("|---|---:|---:|---:|---|")
    mint_ratio = ratio(samples, "mint chit", "mint raw")
    print(
        f"| mint (`chit.core.biscuit.mint`) | {m['mint chit']:.1f} | {m['mint raw']:.1f} | "
        f"{mint_ratio:.2f}{TIMES} | {TIMES}1.10: {verdict(mint_ratio <= 1.10)} |"
    )
    text_ratio = ratio(samples, "attenuate chit", "attenuate raw")
    print(
        f"| attenuate a chit from its text (`chit.attenuate`: verify, append, serialize) | "
        f"{m['attenuate chit']:.1f} | {m['attenuate raw']:.1f} | {text_ratio:.2f}{TIMES} | "
        f"{TIMES}1.10: {verdict(text_ratio <= 1.10)} |"
    )
    hop, hop_ratio = m["hop chit"], ratio(samples, "hop chit", "hop raw")
    print(
        f"| attenuate one hop (the request's chit, verified when it came in, by a `ChitForwarder`: append, "
        f"serialize) | {hop:.1f} | {m['hop raw']:.1f} | {hop_ratio:.2f}{TIMES} | "
        f"< 150 µs: {verdict(hop < 150)}; {TIMES}1.10: {verdict(hop_ratio <= 1.10)} |"
    )
    print()
    print(
        f"| blocks | token chars / bytes | SDK verify+authorize, token not cached µs | the same, blocks not "
        f"remembered either µs | raw biscuit_auth µs | SDK {TIMES} raw (cold) | SDK cached µs "
        f"| targets ({TIMES}1.10 not cached, cold; cached < 5 µs) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in BLOCKS:
        sdk, cold, raw, hit = m[f"{n} sdk"], m[f"{n} sdk cold"], m[f"{n} raw"], m[f"{n} sdk cached"]
        chars, size = sizes[n]
        warm, cold_ratio = ratio(samples, f"{n} sdk", f"{n} raw"), ratio(samples, f"{n} sdk cold", f"{n} raw")
        print(
            f"| {n} | {chars} / {size} | {sdk:.1f} | {cold:.1f} | {raw:.1f} | {warm:.2f}{TIMES} "
            f"({cold_ratio:.2f}{TIMES}) | {hit:.2f} | {verdict(warm <= 1.10)}, {verdict(cold_ratio <= 1.10)}; "
            f"{verdict(hit < 5)} |"
        )
    print()
    jwt_ratio = ratio(samples, "jwt sdk", "jwt pyjwt")
    print(
        f"JWT ({args.alg}) in the same run: SDK verify+require, no cache {m['jwt sdk']:.1f} µs; PyJWT `jwt.decode` "
        f"{m['jwt pyjwt']:.1f} µs ({jwt_ratio:.2f}{TIMES}). A 3-block chit through the SDK costs "
        f"{m['3 sdk'] / m['jwt sdk']:.2f}{TIMES} the SDK's JWT path."
    )


if __name__ == "__main__":
    main()
