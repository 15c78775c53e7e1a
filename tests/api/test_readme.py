"""Every example of README.md runs as written, against a real demo server.

The rule, for whoever writes the README:

- A fenced block whose info string starts with ``sh`` runs in ``bash -euo pipefail``; one that starts with
  ``python`` runs as a program of the virtual environment's Python (``.venv/bin/python`` after ``make``). Any
  other block (``text`` for output and protocol samples) is only shown.
- A second word says whose demo key the reader has pasted (the demo's ``export TOKEX_KEY=... TOKEX_SECRET=...``
  line): ``seller``, ``buyer`` or ``admin``; the block runs with those two variables set. ``inference`` says the
  reader pasted the demo buyer's ``export OPENAI_BASE_URL=... OPENAI_API_KEY=...`` line instead. ``skip`` marks a block
  that cannot run here, such as ``make run`` itself (the fresh-clone timing, ``make bench-first-start``, runs that
  one); say why in the text around it.
- Blocks run in README order, from the repository's folder, against one server started as the README starts it
  (``tokex demo``, on a new database, without the simulated flow, so that the order book stays put between
  blocks). ``http://127.0.0.1:8000`` in a block stands for that server's address.
- A block passes when it exits 0 within a minute; what it prints is not compared (the market moves), but is shown
  when it fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.api_server import fresh_database

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEMO_URL = "http://127.0.0.1:8000"
RUNNERS = ("sh", "python")
KEYS = ("seller", "buyer", "admin", "inference")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
START_SECONDS = 120
BLOCK_SECONDS = 60


@dataclass(frozen=True)
class Block:
    line: int
    runner: str
    key: str | None
    code: str

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.runner}{' ' + self.key if self.key else ''})"


def blocks() -> list[Block]:
    """The README's runnable blocks, in order."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        words = match.group(1).split()
        if not words or words[0] not in RUNNERS or "skip" in words[1:]:
            continue
        key = next((word for word in words[1:] if word in KEYS), None)
        unknown = [word for word in words[1:] if word not in KEYS]
        assert not unknown, f"README.md:{text.count(chr(10), 0, match.start()) + 1}: unknown block words {unknown}"
        found.append(Block(text.count("\n", 0, match.start()) + 1, words[0], key, match.group(2)))
    return found


@dataclass
class Demo:
    url: str
    keys: dict[str, tuple[str, str]]
    """demo-seller/demo-buyer/admin -> (key, secret), as the banner prints them."""
    openai: tuple[str, str]
    """The demo buyer's OPENAI_BASE_URL and OPENAI_API_KEY, as the banner prints them."""


@pytest.fixture(scope="module")
def demo(postgres_admin_url: str) -> Iterator[Demo]:
    """``tokex demo`` as a subprocess on a new database, its address and keys read from what it prints."""
    tokex = Path(sys.executable).parent / "tokex"
    with fresh_database(postgres_admin_url) as dsn, tempfile.TemporaryDirectory(prefix="tokex-readme-") as home:
        process = subprocess.Popen(
            [str(tokex), "demo", "--database-url", dsn, "--port", "0", "--flow-rate", "0"],
            env={**os.environ, "TOKEX_HOME": home}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        banner_done = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line)
                if "try: curl" in line:
                    banner_done.set()
            banner_done.set()

        threading.Thread(target=read, daemon=True).start()
        try:
            if not banner_done.wait(START_SECONDS) or process.poll() is not None:
                pytest.fail("tokex demo did not start:\n" + "".join(lines))
            output = "".join(lines)
            url = re.search(r"a live market on (http://\S+)", output).group(1)
            keys = {
                role: (key, secret) for role, key, secret in re.findall(
                    r"^ +(\S+) \(account \d+\).*\n +export TOKEX_KEY=(\S+) TOKEX_SECRET=(\S+)$", output, re.MULTILINE)
            }
            openai = re.search(r"export OPENAI_BASE_URL=(\S+) OPENAI_API_KEY=(\S+)$", output, re.MULTILINE)
            yield Demo(url, keys, openai.groups())
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


ROLES = {"seller": "demo-seller", "buyer": "demo-buyer", "admin": "admin"}


def test_the_readme_has_examples_of_every_kind():
    found = blocks()
    assert {block.runner for block in found} == set(RUNNERS)
    assert {block.key for block in found} >= set(KEYS)


@pytest.mark.parametrize("block", blocks(), ids=str)
def test_readme_block_runs(block: Block, demo: Demo):
    env = {**os.environ}
    env.pop("TOKEX_KEY", None)
    env.pop("TOKEX_SECRET", None)
    if block.key == "inference":
        env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"] = demo.openai
    elif block.key is not None:
        env["TOKEX_KEY"], env["TOKEX_SECRET"] = demo.keys[ROLES[block.key]]
    code = block.code.replace(DEMO_URL, demo.url)
    if block.runner == "sh":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable,
                   "-c", code]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_SECONDS)
    assert result.returncode == 0, f"{block} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
