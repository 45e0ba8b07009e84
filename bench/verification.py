"""Benchmark: local verification of a chit access token, per algorithm, against raw PyJWT.

For each algorithm a fresh key signs one access token (``encode_access_token``); in the same run,
on the same token and the same parsed public key, this times:

* ``decode_access_token``: ``chit.core.jwt.decode_access_token`` (header checks, key lookup by
  ``kid``, PyJWT decode with chit's required claims, ``AccessTokenClaims``), what the auth server
  uses on tokens it issued;
* ``AccessTokenDecoder``: ``chit.core.jwt.AccessTokenDecoder.decode``, the same checks done once each
  without going through ``jwt.decode``: the SDK verifier's path (left out where chit has no such class);
* ``PyJWT``: plain ``jwt.decode(token, key, algorithms=[alg], issuer=..., audience=...)``, the
  baseline (the SDK target is at most 1.10 times this);
* ``PyJWT, chit's options``: ``jwt.decode`` with the leeway and required claims chit asks for, to
  tell chit's own overhead from the cost of the checks it adds;
* ``signature only``: PyJWT's algorithm object verifying the signature, the floor under all of them.

Each repeat times every variant once, interleaved, for about ``--seconds`` seconds each, in CPU time
of this process (``time.process_time``), so that time slices lost to other work on a shared machine
do not count; the table shows medians of the per-operation times (timeit, garbage collector off),
the median of the per-repeat ratios, and the ratio of the best repeats.

    /work/venv/bin/python bench/verification.py        # under a minute
"""

from __future__ import annotations

import argparse
import base64
import platform
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import cryptography
import jwt
from benchinfo import chit_source, load_average
from jwt.algorithms import get_default_algorithms

from chit.core import jwt as chit_jwt
from chit.core.claims import AccessTokenClaims
from chit.core.jwt import decode_access_token, encode_access_token
from chit.core.keys import ALGORITHMS, Algorithm, new_signing_key

ISSUER = "http://127.0.0.1:8700"
AUDIENCE = "image-store"
SDK_TARGET = 1.10
TIMES = "\u00d7"  # the multiplication sign, in ratios
# CPU time of this process, not wall time: time slices lost to other work on a shared machine do not count.
CLOCK = time.process_time
DECODE = "decode_access_token"
DECODER = "AccessTokenDecoder"
PYJWT = "PyJWT"
OPTIONS = "PyJWT, chit's options"
SIGNATURE = "signature only"


def make_cases(alg: Algorithm) -> dict[str, Callable[[], object]]:
    now = int(time.time())
    key = new_signing_key(alg, datetime.now(UTC))
    claims = AccessTokenClaims(
        iss=ISSUER,
        sub="cli_benchmark0000000000000000",
        aud=(AUDIENCE,),
        exp=now + 3600,
        iat=now,
        jti="0123456789abcdef0123456789abcdef",
        client_id="bench",
        scope=("image-store:images:read", "image-store:images:write"),
    )
    token = encode_access_token(claims, key)
    public_key = key.public_key  # parsed once, as a verifier caches it
    keys = {key.kid: (public_key, alg)}.get
    signing_input, _, signature_b64 = token.rpartition(".")
    message = signing_input.encode()
    signature = base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4))
    algorithm = get_default_algorithms()[alg]
    options = {"require": ["exp", "iat", "iss", "sub", "jti"], "verify_aud": True, "verify_exp": True}

    def chit_decode() -> object:
        return decode_access_token(token, keys, issuer=ISSUER, audience=AUDIENCE)

    def pyjwt() -> object:
        return jwt.decode(token, public_key, algorithms=[alg], issuer=ISSUER, audience=AUDIENCE)

    def pyjwt_chit_options() -> object:
        return jwt.decode(
            token, public_key, algorithms=[alg], issuer=ISSUER, audience=AUDIENCE, leeway=60, options=options
        )

    def signature_only() -> object:
        if not algorithm.verify(message, public_key, signature):
            raise AssertionError("signature does not verify")
        return True

    cases: dict[str, Callable[[], object]] = {DECODE: chit_decode}
    if hasattr(chit_jwt, "AccessTokenDecoder"):  # the SDK's decoder, where this chit has it
        decoder = chit_jwt.AccessTokenDecoder(issuer=ISSUER, audience=AUDIENCE)
        finder = {key.kid: chit_jwt.verification_key(key.kid, alg, public_key)}.get

        def chit_decoder() -> object:
            return decoder.decode(token, finder, time.time())

        cases[DECODER] = chit_decoder
    cases.update({PYJWT: pyjwt, OPTIONS: pyjwt_chit_options, SIGNATURE: signature_only})
    # Same token, same answer: otherwise the timings would compare different work.
    assert all(cases[name]() == claims for name in (DECODE, DECODER) if name in cases)
    assert pyjwt() == pyjwt_chit_options() == claims.to_dict()
    signature_only()
    return cases


def calibrate(fn: Callable[[], object], seconds: float) -> int:
    """Loops per repeat so that one repeat takes about ``seconds``."""
    timer = timeit.Timer(fn, timer=CLOCK)
    number, elapsed = timer.autorange()
    return max(1, int(number * seconds / elapsed))


def measure(alg: Algorithm, repeats: int, seconds: float) -> dict[str, list[float]]:
    cases = make_cases(alg)
    loops = {name: calibrate(fn, seconds) for name, fn in cases.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timeit.Timer(cases[name], timer=CLOCK).timeit(loops[name])
            times[name].append(elapsed / loops[name] * 1e6)
    return times


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algs", nargs="+", default=list(ALGORITHMS), choices=list(ALGORITHMS))
    parser.add_argument("--repeats", type=int, default=15, help="interleaved repeats per variant")
    parser.add_argument("--seconds", type=float, default=0.2, help="seconds per variant and repeat")
    args = parser.parse_args(argv)
    if not 1 <= args.repeats <= 50 or not 0.01 <= args.seconds <= 2:
        parser.error("keep --repeats within 1-50 and --seconds within 0.01-2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    load_before = load_average()
    rows = []
    for alg in args.algs:
        times = measure(alg, args.repeats, args.seconds)
        rows.append((alg, times))
        summary = ", ".join(f"{n} {statistics.median(v):.1f} µs" for n, v in times.items())
        print(f"  {alg}: {summary}", file=sys.stderr, flush=True)
    command = "python bench/verification.py " + " ".join(argv if argv is not None else sys.argv[1:])
    chit_variants = [name for name in (DECODE, DECODER) if name in rows[0][1]]
    lines = [
        f"### Verification, one access token ({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command.strip()}`: CPU µs per verification, median of {args.repeats} interleaved repeats "
        f"of about {args.seconds:g} s each, one process (load average {load_before} before, "
        f"{load_average()} after); Python {platform.python_version()}, "
        f"PyJWT {jwt.__version__}, cryptography {cryptography.__version__}; {chit_source()}. "
        f"{TIMES} PyJWT: ratio of the medians, then in brackets the median of the per-repeat ratios.",
        "",
        "| alg | "
        + " | ".join(f"`{n}` µs | {TIMES} PyJWT" for n in chit_variants)
        + f" | {PYJWT} µs | {OPTIONS} µs | {SIGNATURE} µs | target {SDK_TARGET:.2f}{TIMES} |",
        "|---|" + "---:|---:|" * len(chit_variants) + "---:|---:|---:|---|",
    ]
    for alg, times in rows:
        med = {name: statistics.median(values) for name, values in times.items()}
        cells = []
        for name in chit_variants:
            paired = statistics.median(c / r for c, r in zip(times[name], times[PYJWT], strict=True))
            cells.append(f"{med[name]:.1f} | {med[name] / med[PYJWT]:.2f}{TIMES} ({paired:.2f}{TIMES})")
        sdk = chit_variants[-1]
        verdict = f"{'met' if med[sdk] / med[PYJWT] <= SDK_TARGET else 'missed'} by `{sdk}`"
        lines.append(
            f"| {alg} | {' | '.join(cells)} | {med[PYJWT]:.1f} | {med[OPTIONS]:.1f} | {med[SIGNATURE]:.1f} "
            f"| {verdict} |"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
