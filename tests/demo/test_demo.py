"""``chit demo`` run as the real executable: the walkthrough decides every step as the script expects and
shows its evidence, the running demo answers the curl lines it prints and stops every process it started
on Ctrl+C (SIGINT), a decision that differs makes ``--once`` exit 1, and bad configuration ends with a
message naming the fix. Every demo run starts seven processes (about 15 s): the tests that only read the
``--once`` output share one run."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import CHIT, ROOT, claims_of, free_port

from chit.cli.demo import SERVERS
from chit.demo.provision import password_of
from chit.demo.walkthrough import Step, steps

STEP_COUNT = len(list(steps()))
STEP_LINE = re.compile(r"^ *(\d+) (✔ allowed|✘ refused|✘ failed) +(.+?) *$", re.MULTILINE)
URL_LINE = re.compile(r"^  (auth server|[a-z-]+) +http://127\.0\.0\.1:(\d+)$", re.MULTILINE)
STARTED = re.compile(r"Started the auth server and 6 services in (\d+(?:\.\d+)?) s")
DATA_DIR = re.compile(r"demo: data in (\S+)")
MARKS = {"allowed": "✔ allowed", "refused": "✘ refused"}
RUNNING = "Ctrl+C stops every process"


@dataclass
class DemoRun:
    """A finished ``chit demo`` process: its exit code and output, and the temporary directory it ran in
    (its ``TMPDIR``)."""

    returncode: int
    stdout: str
    stderr: str
    tmp: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def flat(self) -> str:
        """The output with every run of whitespace one space: a message as written, however it wrapped."""
        return " ".join(self.output.split())


def demo_env(tmp: Path) -> dict[str, str]:
    """The environment without the shell's ``CHIT_*`` settings, wide enough for no line to wrap, with
    ``tmp`` as the directory the demo creates its temporary installation in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_") and k not in ("FORCE_COLOR", "NO_COLOR")}
    env.update({"COLUMNS": "400", "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"})
    return env


def run_demo(tmp: Path, *args: str, timeout: float = 90) -> DemoRun:
    """``chit demo ARGS`` to its end, with ``tmp`` (created) as its ``TMPDIR``."""
    tmp.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [CHIT, "demo", *args],
        env=demo_env(tmp),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return DemoRun(done.returncode, done.stdout, done.stderr, tmp)


def copy_examples(destination: Path) -> Path:
    """A copy of the repository's examples/, at a path of its own: a process running one of its services
    names that path on its command line."""
    shutil.copytree(ROOT / "examples", destination, ignore=shutil.ignore_patterns("__pycache__"))
    return destination


def is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (connections closing from the tests' requests do not
    count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def processes_mentioning(text: str) -> list[str]:
    """The running processes whose command line holds ``text``: ``"<pid>: <command line>"``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if text in command:
            found.append(f"{entry.name}: {command}")
    return found


def step_blocks(output: str) -> dict[str, str]:
    """Each step's lines (its title line to the next step's), by its title."""
    matches = list(STEP_LINE.finditer(output))
    ends = [match.start() for match in matches[1:]] + [len(output)]
    return {match.group(3): output[match.start() : end] for match, end in zip(matches, ends, strict=True)}


def step(title: str) -> Step:
    return next(found for found in steps() if found.title == title)


def data_dir_of(run: DemoRun) -> Path:
    found = DATA_DIR.search(run.stdout)
    assert found, run.output
    return Path(found.group(1))


def assert_nothing_left(run: DemoRun, *paths: Path) -> None:
    """No process of the demo runs on: none names its data directory (the auth server) or ``paths`` (the
    examples the services run from)."""
    for path in paths:
        assert processes_mentioning(str(path)) == [], run.output


# --- one walkthrough with --once, on ports the test chose --------------------------------------------


@dataclass
class OnceRun:
    run: DemoRun
    ports: dict[str, int]  # the auth server's and each service's, as given with --port and --service-port
    examples: Path


@pytest.fixture(scope="module")
def once(tmp_path_factory: pytest.TempPathFactory) -> OnceRun:
    """``chit demo --once``, run once for the tests that read its output: its output does not print where
    the processes listened, so it runs on ports given with ``--port`` and ``--service-port``."""
    root = tmp_path_factory.mktemp("once")
    examples = copy_examples(root / "examples")
    ports: dict[str, int] = {}
    for name in ["auth server", *(service.id for service in SERVERS)]:
        while (port := free_port()) in ports.values():
            continue
        ports[name] = port
    args = ["--once", "--examples", str(examples), "--port", str(ports["auth server"])]
    for service in SERVERS:
        args += ["--service-port", f"{service.id}={ports[service.id]}"]
    return OnceRun(run_demo(root / "tmp", *args), ports, examples)


def test_once_decides_every_step_of_the_script_as_expected_in_order(once: OnceRun) -> None:
    run = once.run
    assert run.returncode == 0, run.output
    expected = [(str(number), MARKS[s.expect], s.title) for number, s in enumerate(steps(), start=1)]
    assert STEP_LINE.findall(run.stdout) == expected, run.output
    assert f"All {STEP_COUNT} steps were decided as expected" in run.stdout
    assert "NOT AS EXPECTED" not in run.output
    assert "Traceback" not in run.output
    assert "Stopped the 7 processes the demo started" in run.stdout


def test_once_says_how_long_starting_the_auth_server_and_the_services_took(once: OnceRun) -> None:
    # how long it takes is measured by bench/demo_startup.py (under 15 s), not in a test on a shared machine
    started = STARTED.search(once.run.stdout)
    assert started, once.run.output
    assert float(started.group(1)) > 0


def test_the_steps_show_the_evidence_of_their_decision(once: OnceRun) -> None:
    blocks = step_blocks(once.run.stdout)
    upload = blocks["alice uploads a photo; it is tagged for her during the upload"]
    assert "alice → image-store → tagging → image-store" in upload
    assert "PUT /images/sunset?title=Sunset+in+Porto → 200" in upload
    assert "written by tagging acting for alice" in upload
    assert "copied 2 images" in blocks["the nightly archiver copies every image"]
    checkout = blocks["alice checks out: the cart pays, the payment service sends the receipt"]
    assert "receipt sent through cart → payment" in checkout
    assert "bob → image-store   GET /images/sunset → 403" in blocks["bob reads alice's photo"]


def test_every_service_refuses_alice_within_a_second_of_the_logout(once: OnceRun) -> None:
    blocks = step_blocks(once.run.stdout)
    titles = [
        "the image store, with her token",
        "the cart, with her token",
        "the payment service, with a chit minted for her before",
    ]
    for title in titles:
        assert step(title).expect == "refused"
        found = re.search(r"\((\d+) ms after the logout\)", blocks[title])
        assert found, blocks[title]
        assert int(found.group(1)) < 1000, blocks[title]
    assert len(re.findall(r"ms after the logout", once.run.stdout)) == len(titles)


def test_once_stops_every_process_and_removes_its_temporary_directory(once: OnceRun) -> None:
    run = once.run
    data = data_dir_of(run)
    assert data.is_relative_to(run.tmp), data  # the temporary directory, made in the TMPDIR it was given
    assert list(run.tmp.iterdir()) == [], run.output
    not_free = {name: port for name, port in once.ports.items() if not is_free(port)}
    assert not_free == {}, run.output
    assert_nothing_left(run, data, once.examples)


# --- the demo left running --------------------------------------------------------------------------


def wait_for_output(process: subprocess.Popen[bytes], log: Path, *texts: str, timeout: float = 90) -> str:
    """The output so far once it holds every text; fails if the process ends or the texts do not come."""
    deadline = time.monotonic() + timeout
    while True:
        output = log.read_text(errors="replace")
        if all(text in output for text in texts):
            return output
        if process.poll() is not None:
            pytest.fail(f"chit demo exited with {process.returncode} before printing {texts}:\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"chit demo did not print {texts} within {timeout:.0f} s:\n{output}")
        time.sleep(0.2)


def try_it_commands(output: str) -> list[str]:
    """The commands printed after "Try it", a line ending in a backslash joined with the next."""
    printed = output.split("Try it", 1)[1].split("\n", 1)[1]
    joined = printed.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``chit demo`` started as the leader of a new process group, with its output in a file; killed with everything it
    started if a test leaves it running."""
    examples = copy_examples(tmp_path / "examples")
    (tmp_path / "tmp").mkdir()
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:  # a file, not a pipe: a pipe nobody reads would block the demo
        process = subprocess.Popen(
            [CHIT, "demo", "--examples", str(examples)],
            env=demo_env(tmp_path / "tmp"),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # any child it left behind


def test_the_running_demo_answers_its_curl_lines_and_ctrl_c_stops_every_process(
    demo_process: tuple[subprocess.Popen[bytes], Path], tmp_path: Path
) -> None:
    process, log = demo_process
    output = wait_for_output(process, log, RUNNING, "/orders")
    running = output.split(RUNNING, 1)[1].split("Try it", 1)[0]
    urls = dict(URL_LINE.findall(running))
    assert set(urls) == {"auth server", *(service.id for service in SERVERS)}, running
    ports = {name: int(port) for name, port in urls.items()}
    assert len(set(ports.values())) == 7
    users = ", ".join(f"{name} ({password_of(name)})" for name in ("alice", "bob", "carol", "mia"))
    assert f"users        {users}" in running

    commands = try_it_commands(output)
    assert len(commands) == 5, commands
    assert "/oauth2/token \\\n  | python3 " in output  # the login, continued on the next line
    assert commands[0].startswith("TOKEN=$(curl "), commands[0]
    assert "username=bob" in commands[0], commands[0]
    assert all(command.startswith("curl ") and "$TOKEN" in command for command in commands[1:]), commands
    # each command's answer on a line of its own, after the token the login got
    script = "\n".join([commands[0], 'echo "$TOKEN"', *(f"{command}\necho" for command in commands[1:])])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHIT_")}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    token, listed, put, checkout, orders = done.stdout.splitlines()
    bob = claims_of(token)["sub"]
    images = json.loads(listed)
    assert isinstance(images, list), listed
    assert {image["owner_id"] for image in images} <= {bob}, listed
    cat = json.loads(put)
    assert (cat["id"], cat["owner_id"], cat["title"]) == ("cat", bob, "Cat in Rome"), put
    placed = json.loads(checkout)
    assert (placed["order"], placed["for"]) == ("placed", bob), checkout
    assert [order["id"] for order in json.loads(orders)] == [placed["id"]], orders

    run = DemoRun(0, output, "", tmp_path / "tmp")
    data = data_dir_of(run)
    assert processes_mentioning(str(data)), "the auth server runs with its data directory on its command line"
    process.send_signal(signal.SIGINT)  # Ctrl+C; SIGTERM takes the same way out (not run: 15 s more)
    returncode = process.wait(timeout=15)
    run = DemoRun(returncode, log.read_text(errors="replace"), "", tmp_path / "tmp")
    assert returncode == 0, run.output
    assert "Stopped the 7 processes the demo started" in run.output
    assert "Traceback" not in run.output
    not_free = {name: port for name, port in ports.items() if not is_free(port)}
    assert not_free == {}, run.output
    assert_nothing_left(run, data, tmp_path / "examples")
    assert list(run.tmp.iterdir()) == [], run.output  # its temporary installation removed


# --- a decision that differs ------------------------------------------------------------------------


def test_once_exits_1_when_a_decision_is_not_the_expected_one(tmp_path: Path) -> None:
    examples = copy_examples(tmp_path / "examples")
    store = examples / "photos" / "image_store.py"
    source = store.read_text(encoding="utf-8")
    check = '    principal.require_owner(image.owner_id, unless="image-store:images:read-any")\n'
    start = source.index("async def read_image(")
    at = source.index(check, start)
    assert at < source.index("\n@app.", start), "the ownership check is in read_image"
    store.write_text(source[:at] + "    pass\n" + source[at + len(check) :], encoding="utf-8")
    assert check not in store.read_text(encoding="utf-8")[start:].split("\n@app.", 1)[0]

    run = run_demo(tmp_path / "tmp", "--once", "--examples", str(examples))
    assert run.returncode == 1, run.output
    blocks = step_blocks(run.stdout)
    title = "bob reads alice's photo"
    assert step(title).expect == "refused"
    assert "✔ allowed" in blocks[title].splitlines()[0]
    assert "NOT AS EXPECTED (expected: refused)" in blocks[title], blocks[title]
    assert [t for t, block in blocks.items() if "NOT AS EXPECTED" in block] == [title], run.output
    assert f"1 of {STEP_COUNT} steps did not go as expected" in run.stdout
    assert "Traceback" not in run.output
    assert_nothing_left(run, data_dir_of(run), examples)


# --- bad configuration --------------------------------------------------------------------------------


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def assert_refused_config(run: DemoRun, *fragments: str) -> None:
    """Exit 1 with ``chit demo: <message>`` naming the fix, no traceback, no process started, and no
    temporary directory left behind."""
    assert run.returncode == 1, run.output
    assert "chit demo: " in run.flat, run.output
    for fragment in fragments:
        assert fragment in run.flat, run.output
    assert "Traceback" not in run.output
    assert "Stopped the" not in run.output  # nothing was started
    assert list(run.tmp.iterdir()) == [], run.output
    assert processes_mentioning(str(run.tmp)) == []


def test_an_auth_server_port_in_use_is_refused_naming_the_option(tmp_path: Path, held_port: int) -> None:
    run = run_demo(tmp_path / "tmp", "--once", "--port", str(held_port), "--examples", str(ROOT / "examples"))
    assert_refused_config(run, f"cannot listen on 127.0.0.1:{held_port}", "--port")


def test_a_service_port_in_use_is_refused_naming_the_port(tmp_path: Path, held_port: int) -> None:
    given = f"image-store={held_port}"
    run = run_demo(tmp_path / "tmp", "--once", "--service-port", given, "--examples", str(ROOT / "examples"))
    assert_refused_config(run, f"cannot listen on 127.0.0.1:{held_port} for image-store", "--service-port image-store")


def test_examples_that_are_not_there_are_refused_naming_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_demo(tmp_path / "tmp", "--once", "--examples", str(empty))
    assert_refused_config(run, "run `chit demo` from a clone of chit", "--examples")


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    examples = copy_examples(tmp_path / "examples")
    missing = examples / "photos" / "tagging.toml"
    missing.unlink()
    run = run_demo(tmp_path / "tmp", "--once", "--examples", str(examples))
    assert_refused_config(run, f"{missing} is missing", "--examples")


def test_a_data_dir_that_is_not_empty_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("mine\n", encoding="utf-8")
    run = run_demo(tmp_path / "tmp", "--once", "--data-dir", str(data), "--examples", str(ROOT / "examples"))
    assert_refused_config(run, f"{data} is not empty", "--data-dir")
    assert [path.name for path in data.iterdir()] == ["keep.txt"]
    assert (data / "keep.txt").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize("given", ["nope=1", "image-store=abc", "image-store=70000", "image-store"])
def test_a_malformed_service_port_is_a_usage_error(tmp_path: Path, given: str) -> None:
    run = run_demo(tmp_path / "tmp", "--once", "--service-port", given, "--examples", str(ROOT / "examples"))
    assert run.returncode == 2, run.output
    assert "SERVICE=PORT" in run.flat, run.output
    assert "Traceback" not in run.output
    assert list(run.tmp.iterdir()) == [], run.output
