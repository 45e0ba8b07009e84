"""The demo's script: requests made to the running example services as their users and services make
them, each with the decision it expects. A step prints who made the request, the chain of services it
went through, the decision and its reason, as the services answered them.

Requests that a service makes on its own (the image store asking the tagging service, a queued tagging
job, the cart paying) are made by the services themselves; where the script plays a service to show a
refusal (the tagging service writing on bob's image, a chit handed on too far), it uses that service's
own credentials and key, exactly as the service would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.markup import escape

from chit.demo.processes import python
from chit.demo.provision import ARCHIVER_SCRIPT, Provisioned, log_out_everywhere, password_of
from chit.sdk.chits import ServiceKey, attenuate
from chit.sdk.identity import ServiceIdentity

Decision = Literal["allowed", "refused"]
BISCUIT = "urn:chit:token-type:biscuit"  # asks the token exchange for a chit rather than a JWT
TO_PAYMENT = ["payment:charges:create", "email:messages:send"]  # what the cart hands on (examples/shop/cart.py)
TO_EMAIL = ["email:messages:send"]  # what the payment service hands on (examples/shop/payment.py)
REVOCATION_BOUND = 1.0  # seconds from the logout to every service refusing the user
JOB_WAIT = 15.0  # seconds a queued tagging job has to run (the image store runs its queue every second)
CHALLENGE_ERROR = re.compile(r'error="([^"]+)"')


class Unexpected(Exception):
    """A step's answer lacks what the step shows (a tag not written, a path not proven)."""


@dataclass(frozen=True)
class Outcome:
    """What a step's request got: its status line (``PUT /images/sunset → 200``), the decision, and why."""

    request: str
    decision: Decision
    reason: str


@dataclass(frozen=True)
class Step:
    """One request of the script: what it shows, who makes it through which services, what it expects."""

    title: str
    chain: tuple[str, ...]
    expect: Decision
    run: Callable[[World], Outcome]


@dataclass
class Result:
    step: Step
    outcome: Outcome | None
    error: str | None = None

    @property
    def as_expected(self) -> bool:
        return self.error is None and self.outcome is not None and self.outcome.decision == self.step.expect


@dataclass
class World:
    """The running demo as the script sees it: where each service listens, what was provisioned, and the
    tokens the script keeps between steps."""

    issuer: str
    urls: dict[str, str]
    provisioned: Provisioned
    examples: Path
    http: httpx.Client
    kept: dict[str, Any] = field(default_factory=dict)
    _identities: dict[str, ServiceIdentity] = field(default_factory=dict)

    def url(self, service: str, path: str) -> str:
        return self.urls[service] + path

    def login(self, username: str) -> dict[str, Any]:
        """The user logs in with her password through the public first-party client ``chit-cli``."""
        form = {
            "grant_type": "password",
            "client_id": "chit-cli",
            "username": username,
            "password": password_of(username),
        }
        response = self.http.post(self.issuer + "/oauth2/token", data=form)
        if response.status_code != 200:
            raise Unexpected(f"{username} could not log in: {response.text}")
        tokens: dict[str, Any] = response.json()
        return tokens

    def token(self, username: str) -> str:
        token: str = self.login(username)["access_token"]
        return token

    def identity(self, service: str) -> ServiceIdentity:
        """The service's own account, with the client secret the demo gave its process."""
        if service not in self._identities:
            secret = self.provisioned.secrets[service]
            self._identities[service] = ServiceIdentity(service, secret, issuer=self.issuer)
        return self._identities[service]

    def service_key(self, service: str) -> ServiceKey:
        return ServiceKey(service, self.provisioned.service_keys[service])

    def root_keys(self) -> list[str]:
        """The auth server's chit root keys, from its metadata (read once: the demo rotates none)."""
        if "root-keys" not in self.kept:
            metadata = self.http.get(self.issuer + "/.well-known/openid-configuration").json()
            self.kept["root-keys"] = metadata["biscuit_public_keys"]
        keys: list[str] = self.kept["root-keys"]
        return keys

    def minted_chit(self, username: str) -> str:
        """A chit for the user, as the cart gets one at checkout: her token exchanged by the cart."""
        return self.identity("cart").exchange_sync(self.token(username), requested_token_type=BISCUIT).access_token

    def chit_to_payment(self, username: str) -> str:
        """The chit the cart hands the payment service: narrowed, signed with the cart's key."""
        chit = self.minted_chit(username)
        return attenuate(chit, operations=TO_PAYMENT, sign_as=self.service_key("cart"), public_keys=self.root_keys())

    def call(self, method: str, service: str, path: str, token: str | None, **params: Any) -> httpx.Response:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.http.request(method, self.url(service, path), headers=headers, params=params or None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request_line(response: httpx.Response) -> str:
    request = response.request
    path = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
    return f"{request.method} {path} → {response.status_code}"


def refusal(response: httpx.Response) -> str:
    """Why a service refused: the OAuth error of its challenge and the detail of its answer."""
    error = CHALLENGE_ERROR.search(response.headers.get("www-authenticate", ""))
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") or body.get("error_description") or body.get("error") or response.reason_phrase
    code = error.group(1) if error else body.get("error") if isinstance(body.get("error"), str) else None
    return f"{code}: {detail}" if code and code != detail else str(detail)


def outcome(response: httpx.Response, allowed: Callable[[dict[str, Any]], str] | None = None) -> Outcome:
    """The decision a service's answer carries: allowed (2xx) with ``allowed``'s account of the body, or
    refused with the reason the service gave."""
    if response.is_success:
        body = response.json() if response.content else {}
        return Outcome(request_line(response), "allowed", allowed(body) if allowed else "done")
    return Outcome(request_line(response), "refused", refusal(response))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def describe_image(image: dict[str, Any]) -> str:
    tags = ", ".join(image["tags"]) or "none"
    where = f", taken in {image['location']}" if image.get("location") else ""
    return f"tags: {tags}{where}"


# --- the photo platform -------------------------------------------------------------------------------


def alice_uploads(world: World) -> Outcome:
    response = world.call("PUT", "image-store", "/images/sunset", world.token("alice"), title="Sunset in Porto")

    def tagged(image: dict[str, Any]) -> str:
        if image["tagged_by"] != ["tagging", "image-store"]:
            raise Unexpected(f"the upload was not tagged for alice by tagging through the image store: {image}")
        return f"{describe_image(image)}; written by tagging acting for alice (actors: tagging ← image-store)"

    return outcome(response, tagged)


def bob_uploads(world: World) -> Outcome:
    response = world.call("PUT", "image-store", "/images/boat", world.token("bob"), title="Boat in Lisbon")
    return outcome(response, lambda image: f"{describe_image(image)}; tagged for bob, as for alice")


def bob_reads_alices_image(world: World) -> Outcome:
    return outcome(world.call("GET", "image-store", "/images/sunset", world.token("bob")))


def tagging_writes_on_bobs_image(world: World) -> Outcome:
    # the image store asks tagging to tag bob's image for alice: tagging may read it (its own account),
    # but writes for alice, and the image store refuses her on an image she does not own
    to_tagging = world.identity("image-store").exchange_sync(world.token("alice"), audience="tagging")
    response = world.http.post(world.url("tagging", "/images/boat/suggest"), headers=bearer(to_tagging.access_token))
    return outcome(response)


def alice_tags_later(world: World) -> Outcome:
    token = world.token("alice")
    queued = world.call("POST", "image-store", "/images/sunset/tag-later", token)
    if queued.status_code != 202:
        return outcome(queued)
    deadline = time.monotonic() + JOB_WAIT
    while (status := world.call("GET", "image-store", "/images/sunset/tag-later", token)).is_success:
        state = status.json()["status"]
        if state != "queued":
            decision: Decision = "allowed" if state == "done" else "refused"
            reason = f"job {status.json()['job_id']}: {state}, run later by the image store with alice's deferred"
            return Outcome(request_line(queued), decision, reason + " delegation (tagging wrote for her again)")
        if time.monotonic() > deadline:
            raise Unexpected(f"the tagging job was still queued after {JOB_WAIT:.0f} s")
        time.sleep(0.1)
    return outcome(status)


def archiver_copies_everything(world: World) -> Outcome:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    env = {
        **inherited,
        "CHIT_ISSUER": world.issuer,
        "ARCHIVER_CLIENT_SECRET": world.provisioned.secrets["archiver"],
        "IMAGE_STORE_URL": world.urls["image-store"],
    }
    script = world.examples / ARCHIVER_SCRIPT
    done = subprocess.run(  # noqa: S603 (the example's own script, run by this Python)
        python(str(script)), env=env, capture_output=True, text=True, timeout=60, check=False
    )
    line = f"python {ARCHIVER_SCRIPT} → exit {done.returncode}"
    if done.returncode != 0:
        return Outcome(line, "refused", (done.stderr.strip().splitlines() or ["no output"])[-1])
    copies = json.loads(done.stdout)
    owners = {world.provisioned.user_ids[name]: name for name in ("alice", "bob")}
    copied = ", ".join(f"{c['id']} ({owners.get(c['owner_id'], c['owner_id'])})" for c in copies)
    if {"sunset", "boat"} - {c["id"] for c in copies}:
        raise Unexpected(f"the archiver did not copy every image: {copied}")
    return Outcome(line, "allowed", f"copied {plural(len(copies), 'image')} with its own account: {copied}")


def archiver_deletes(world: World) -> Outcome:
    return outcome(world.call("DELETE", "image-store", "/images/sunset", world.identity("archiver").sync_token()))


def bob_uploads_explicit(world: World) -> Outcome:
    token = world.token("bob")
    response = world.call("PUT", "image-store", "/images/party", token, title="Party", explicit="true", tag="false")

    def flagged(image: dict[str, Any]) -> str:
        if image["explicit"] is not True:
            raise Unexpected(f"the upload is not flagged explicit: {image}")
        return "flagged explicit by bob, its owner: the moderation service may delete it now"

    return outcome(response, flagged)


def mia_sweeps(world: World) -> Outcome:
    response = world.call("POST", "moderation", "/sweeps", world.token("mia"))

    def swept(body: dict[str, Any]) -> str:
        if body["deleted"] != ["party"]:
            raise Unexpected(f"the sweep deleted {body['deleted']}, not bob's flagged image alone")
        return f"the moderation service deleted {', '.join(body['deleted'])} with its own account"

    return outcome(response, swept)


def moderation_deletes_unflagged(world: World) -> Outcome:
    token = world.identity("moderation").sync_token()
    return outcome(world.call("DELETE", "image-store", "/flagged/sunset", token))


# --- the shop -----------------------------------------------------------------------------------------


def alice_checks_out(world: World) -> Outcome:
    response = world.call("POST", "cart", "/checkout", world.token("alice"))

    def placed(body: dict[str, Any]) -> str:
        receipt = body["payment"]["receipt"]
        if body["payment"]["through"] != ["cart"] or receipt["through"] != ["cart", "payment"]:
            raise Unexpected(f"the chain did not prove its path: {body}")
        return (
            f"order {body['id']}: paid through {' → '.join(body['payment']['through'])}, "
            f"receipt sent through {' → '.join(receipt['through'])} (a {receipt['kind']})"
        )

    return outcome(response, placed)


def carol_checks_out(world: World) -> Outcome:
    return outcome(world.call("POST", "cart", "/checkout", world.token("carol")))


def payment_chit_checks_out(world: World) -> Outcome:
    chit = world.chit_to_payment("alice")
    return outcome(world.call("POST", "cart", "/checkout", chit))


def email_chit_pays(world: World) -> Outcome:
    to_email = attenuate(
        world.chit_to_payment("alice"),
        operations=TO_EMAIL,
        method="POST",
        path="/messages",
        sign_as=world.service_key("payment"),
        public_keys=world.root_keys(),
    )
    return outcome(world.call("POST", "payment", "/charges", to_email))


def chit_skips_the_cart(world: World) -> Outcome:
    narrowed = attenuate(world.minted_chit("alice"), operations=TO_PAYMENT, public_keys=world.root_keys())
    return outcome(world.call("POST", "payment", "/charges", narrowed))


def alice_emails_herself(world: World) -> Outcome:
    return outcome(world.call("POST", "email", "/messages", world.token("alice")))


# --- logging out everywhere ---------------------------------------------------------------------------


def alice_before_logout(world: World) -> Outcome:
    tokens = world.login("alice")
    world.kept["alice"] = tokens
    world.kept["alice-chit"] = world.chit_to_payment("alice")  # minted now, used only after the logout
    response = world.call("GET", "image-store", "/images", tokens["access_token"])
    return outcome(response, lambda images: f"her token works: {plural(len(images), 'image')} of hers listed")


def alice_logged_out(world: World) -> Outcome:
    ended = log_out_everywhere(world.provisioned.settings, "alice")
    world.kept["logged-out-at"] = time.monotonic()
    reason = f"ended {plural(len(ended), 'session')}; every token and chit issued to her so far is revoked"
    return Outcome("chit user logout-everywhere alice", "allowed", reason)


def refused_within_bound(world: World, request: Callable[[], httpx.Response]) -> Outcome:
    """``request`` repeated until a service refuses it; refused late (past the bound) counts as allowed."""
    since = world.kept["logged-out-at"]
    while True:
        response = request()
        elapsed = time.monotonic() - since
        if response.status_code != 200 or elapsed > REVOCATION_BOUND:
            break
        time.sleep(0.01)
    if response.status_code == 200:
        return Outcome(request_line(response), "allowed", f"still accepted {elapsed * 1000:.0f} ms after the logout")
    return Outcome(request_line(response), "refused", f"{refusal(response)} ({elapsed * 1000:.0f} ms after the logout)")


def image_store_refuses_alice(world: World) -> Outcome:
    token = world.kept["alice"]["access_token"]
    return refused_within_bound(world, lambda: world.call("GET", "image-store", "/images", token))


def cart_refuses_alice(world: World) -> Outcome:
    token = world.kept["alice"]["access_token"]
    return refused_within_bound(world, lambda: world.call("GET", "cart", "/orders", token))


def payment_refuses_alices_chit(world: World) -> Outcome:
    chit = world.kept["alice-chit"]
    return refused_within_bound(world, lambda: world.call("POST", "payment", "/charges", chit))


def auth_server_refuses_refresh(world: World) -> Outcome:
    form = {
        "grant_type": "refresh_token",
        "client_id": "chit-cli",
        "refresh_token": world.kept["alice"]["refresh_token"],
    }
    return outcome(world.http.post(world.issuer + "/oauth2/token", data=form))


def alice_logs_in_again(world: World) -> Outcome:
    response = world.call("GET", "image-store", "/images", world.token("alice"))
    return outcome(
        response, lambda images: f"her account is enabled: a new login works ({plural(len(images), 'image')})"
    )


Section = tuple[str, list[Step]]

SCRIPT: list[Section] = [
    (
        "The photo platform (examples/photos)",
        [
            Step(
                "alice uploads a photo; it is tagged for her during the upload",
                ("alice", "image-store", "tagging", "image-store"),
                "allowed",
                alice_uploads,
            ),
            Step("bob uploads a photo", ("bob", "image-store", "tagging", "image-store"), "allowed", bob_uploads),
            Step("bob reads alice's photo", ("bob", "image-store"), "refused", bob_reads_alices_image),
            Step(
                "the tagging service, acting for alice, tags bob's photo",
                ("alice", "image-store", "tagging", "image-store"),
                "refused",
                tagging_writes_on_bobs_image,
            ),
            Step(
                "alice has her photo tagged later, by a queued job",
                ("alice", "image-store", "(queued job)", "tagging", "image-store"),
                "allowed",
                alice_tags_later,
            ),
            Step(
                "the nightly archiver copies every image",
                ("archiver", "image-store"),
                "allowed",
                archiver_copies_everything,
            ),
            Step("the archiver deletes alice's photo", ("archiver", "image-store"), "refused", archiver_deletes),
            Step("bob uploads a photo he flags explicit", ("bob", "image-store"), "allowed", bob_uploads_explicit),
            Step(
                "mia, a moderator, has the flagged photos deleted",
                ("mia", "moderation", "image-store"),
                "allowed",
                mia_sweeps,
            ),
            Step(
                "the moderation service deletes alice's photo, not flagged",
                ("moderation", "image-store"),
                "refused",
                moderation_deletes_unflagged,
            ),
        ],
    ),
    (
        "The shop (examples/shop): a chit narrowed at every hop",
        [
            Step(
                "alice checks out: the cart pays, the payment service sends the receipt",
                ("alice", "cart", "payment", "email"),
                "allowed",
                alice_checks_out,
            ),
            Step(
                "carol, who may check out but not pay, checks out",
                ("carol", "cart", "payment"),
                "refused",
                carol_checks_out,
            ),
            Step(
                "the chit the cart handed to payment checks out again",
                ("alice", "cart", "payment", "cart"),
                "refused",
                payment_chit_checks_out,
            ),
            Step(
                "the chit payment handed to email pays",
                ("alice", "cart", "payment", "email", "payment"),
                "refused",
                email_chit_pays,
            ),
            Step(
                "a chit that skipped the cart pays", ("alice", "(no cart)", "payment"), "refused", chit_skips_the_cart
            ),
            Step(
                "alice sends herself a receipt, around the cart and payment",
                ("alice", "email"),
                "refused",
                alice_emails_herself,
            ),
        ],
    ),
    (
        "alice logged out everywhere: every service refuses her within a second",
        [
            Step("alice lists her photos", ("alice", "image-store"), "allowed", alice_before_logout),
            Step("the operator logs alice out everywhere", ("operator", "auth server"), "allowed", alice_logged_out),
            Step("the image store, with her token", ("alice", "image-store"), "refused", image_store_refuses_alice),
            Step("the cart, with her token", ("alice", "cart"), "refused", cart_refuses_alice),
            Step(
                "the payment service, with a chit minted for her before",
                ("alice", "cart", "payment"),
                "refused",
                payment_refuses_alices_chit,
            ),
            Step(
                "the auth server, with her refresh token",
                ("alice", "auth server"),
                "refused",
                auth_server_refuses_refresh,
            ),
            Step("alice logs in again", ("alice", "image-store"), "allowed", alice_logs_in_again),
        ],
    ),
]


def steps() -> Iterator[Step]:
    for _title, section in SCRIPT:
        yield from section


def run_step(world: World, step: Step) -> Result:
    try:
        return Result(step, step.run(world))
    except Unexpected as exc:
        return Result(step, None, str(exc))
    except Exception as exc:  # an SDK refusal (OAuth2Error), an answer not as expected: shown, never a traceback
        return Result(step, None, f"{type(exc).__name__}: {exc}")


def show(console: Console, number: int, result: Result, names: dict[str, str]) -> None:
    """Three lines a step: the decision and what was tried; who, through which services, and the request;
    the reason (user ids named)."""
    step, found = result.step, result.outcome
    if found is None:
        mark = "[bold red]✘ failed [/]"
    elif found.decision == "allowed":
        mark = "[green]✔ allowed[/]"
    else:
        mark = "[red]✘ refused[/]"
    console.print(f"{number:>3} {mark}  [bold]{escape(step.title)}[/]", soft_wrap=True)
    request = f"   [dim]{escape(found.request)}[/]" if found else ""
    console.print(f"     [cyan]{escape(' → '.join(step.chain))}[/]{request}", soft_wrap=True)
    if found is not None:
        reason = found.reason
        for user_id, name in names.items():
            reason = reason.replace(user_id, name)
        console.print(f"     {escape(reason)}", soft_wrap=True)
    if not result.as_expected:
        expected = f"expected: {step.expect}"
        console.print(f"     [bold yellow]NOT AS EXPECTED ({expected})[/] {escape(result.error or '')}", soft_wrap=True)


def run(console: Console, world: World) -> list[Result]:
    """Every step of the script in order, printed as it goes."""
    results: list[Result] = []
    names = {user_id: name for name, user_id in world.provisioned.user_ids.items()}
    for title, section in SCRIPT:
        console.print()
        console.rule(f"[bold]{escape(title)}[/]", align="left")
        for step in section:
            result = run_step(world, step)
            results.append(result)
            show(console, len(results), result, names)
    return results
