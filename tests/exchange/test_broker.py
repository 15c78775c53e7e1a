"""The broker foundation against the real nats-server binary: the embedded server's lifetime, JetStream
with deduplication, request/reply, reconnection, and NATS_URL.

Tests that need an owner process to die start the server from a child Python process and signal it.
Every embedded server here takes a free port (port 0), so a NATS on this machine is never in the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from nats.js.api import DeliverPolicy

from exchange.broker import connection, subjects
from exchange.broker.connection import connect, display_url, nats_url
from exchange.broker.embedded import EmbeddedNats, EmbeddedNatsError, server_binary
from exchange.lifetime import is_running
from tests.support.broker import nats_home, wait_gone
from tests.support.databases import reachable_temp_home

REPO = Path(__file__).resolve().parents[2]

# Starts the server, reports "<pid> <owned> <url>", then holds it until stdin closes.
CHILD = textwrap.dedent(
    """
    import sys
    from exchange.broker.embedded import EmbeddedNats
    server = EmbeddedNats(sys.argv[1], port=0)
    server.start()
    print(server.pid, server.owned, server.url, flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture
def home() -> Iterator[Path]:
    with nats_home("tokex-nats-") as path:
        yield path


def spawn(home: Path) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": path},
    )


def report(child: subprocess.Popen) -> tuple[int, bool, str]:
    """Wait for the child to have the server; return (server pid, whether the child owns it, URL)."""
    line = child.stdout.readline()
    if not line:
        pytest.fail(f"the child process could not start the server:\n{child.stderr.read()}")
    pid, owned, url = line.split()
    return int(pid), owned == "True", url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_market_data_goes_through_jetstream_once_per_message_id(home: Path) -> None:
    async with EmbeddedNats(home, port=0) as server:
        client = await connect(server.url, "test")
        try:
            js = client.jetstream()
            info = await subjects.ensure_market_data_stream(js)
            assert info.config.duplicate_window == subjects.DUPLICATE_WINDOW
            # Again, and after someone changed it: both leave the stream as configured.
            await subjects.ensure_market_data_stream(js)
            await js.update_stream(subjects.market_data_stream_config().evolve(max_bytes=1024 * 1024))
            info = await subjects.ensure_market_data_stream(js)
            assert (info.config.max_age, info.config.max_bytes) == (subjects.MAX_AGE, subjects.MAX_BYTES)

            subject = subjects.market_data_subject("GLM-4.5")
            assert subject == "tokex.md.GLM-4~5"
            acks = []
            for seq in (41, 42, 42, 43):
                msg_id = subjects.market_data_msg_id("GLM-4.5", seq)
                acks.append(await js.publish(
                    subject, json.dumps({"seq": seq}).encode(), headers={subjects.MSG_ID_HEADER: msg_id}
                ))
            assert [ack.duplicate for ack in acks] == [None, None, True, None]
            assert acks[2].seq == acks[1].seq
            await js.publish(subjects.market_data_subject("DEEPSEEK-V3"), b"{}")
            info = await js.stream_info(subjects.MARKET_DATA_STREAM)
            assert info.state.messages == 4

            sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
            received = [await sub.next_msg(timeout=5) for _ in range(3)]
            assert [json.loads(m.data)["seq"] for m in received] == [41, 42, 43]
            assert {subjects.symbol_of(m.subject) for m in received} == {"GLM-4.5"}
            assert received[1].headers[subjects.MSG_ID_HEADER] == "GLM-4.5:42"
        finally:
            await client.close()


async def test_commands_go_by_request_reply(home: Path) -> None:
    async with EmbeddedNats(home, port=0) as server:
        engine = await connect(server.url, "engine")
        gateway = await connect(server.url, "gateway")
        try:
            async def answer(msg) -> None:
                await msg.respond(b"done:" + msg.data)

            await engine.subscribe(subjects.command_subject(), queue="engine", cb=answer)
            await engine.flush()
            reply = await gateway.request(subjects.command_subject(), b"place 7", timeout=5)
            assert reply.data == b"done:place 7"
            assert subjects.command_subject() == "tokex.cmd.main"
        finally:
            await gateway.close()
            await engine.close()


def test_a_second_start_attaches_and_only_the_owner_stops_the_server(home: Path) -> None:
    owner = EmbeddedNats(home, port=0)
    owner.start()
    other = EmbeddedNats(home, port=0)
    assert other.start() == owner.url
    assert (other.pid, other.owned, owner.owned) == (owner.pid, False, True)
    assert owner.running_servers() == [owner.pid]
    assert (home / "nats.token").stat().st_mode & 0o777 == 0o600
    assert "@" not in owner.display_url

    other.stop()
    assert is_running(owner.pid)
    pid = owner.pid
    owner.stop()
    wait_gone(pid)
    assert owner.running_servers() == []
    assert not list((home / "natsrun").glob("*.ports"))


def test_starts_from_several_processes_run_one_server(home: Path) -> None:
    children = [spawn(home) for _ in range(3)]
    try:
        reports = [report(child) for child in children]
        assert len({pid for pid, _, _ in reports}) == 1
        assert sorted(owned for _, owned, _ in reports) == [False, False, True]
        assert EmbeddedNats(home).running_servers() == [reports[0][0]]
    finally:
        for child in children:
            child.stdin.close()
            child.wait(timeout=20)
    wait_gone(reports[0][0])


def test_the_owner_stops_the_server_on_sigterm(home: Path) -> None:
    child = spawn(home)
    pid, owned, _ = report(child)
    assert owned
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == -signal.SIGTERM
    wait_gone(pid)
    assert not (home / "nats.owner").exists()


async def test_the_orphan_of_a_killed_owner_is_adopted_with_its_streams(home: Path) -> None:
    child = spawn(home)
    pid, owned, url = report(child)
    assert owned
    client = await connect(url, "test")
    try:
        js = client.jetstream()
        await subjects.ensure_market_data_stream(js)
        await js.publish(subjects.market_data_subject("DEEPSEEK-V3"), b"kept",
                         headers={subjects.MSG_ID_HEADER: "DEEPSEEK-V3:1"})
    finally:
        await client.close()
    child.kill()
    child.wait(timeout=10)
    assert is_running(pid), "the server must outlive its killed owner"

    server = EmbeddedNats(home, port=0)
    assert await server.start_async() == url
    assert (server.pid, server.owned) == (pid, True)
    assert server.running_servers() == [pid]
    client = await connect(server.url, "test")
    try:
        js = client.jetstream()
        # The dedup window survives the owner: the same id again is still a duplicate.
        ack = await js.publish(subjects.market_data_subject("DEEPSEEK-V3"), b"again",
                               headers={subjects.MSG_ID_HEADER: "DEEPSEEK-V3:1"})
        assert ack.duplicate
        msg = await js.get_msg(subjects.MARKET_DATA_STREAM, 1)
        assert msg.data == b"kept"
    finally:
        await client.close()
    await server.stop_async()
    wait_gone(pid)
    assert server.running_servers() == []
    child.stdout.close()
    child.stderr.close()
    child.stdin.close()


async def test_a_connection_waits_for_its_server_and_rides_out_a_restart(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=connection.__name__)
    server = EmbeddedNats(home, port=free_port())
    url = server.start()
    server.stop()

    connecting = asyncio.create_task(connect(url, "gateway"))
    await asyncio.sleep(1.5)
    assert not connecting.done(), "connect() must keep trying while there is no server"
    await server.start_async()
    client = await asyncio.wait_for(connecting, 10)
    try:
        async def answer(msg) -> None:
            await msg.respond(b"pong")

        await client.subscribe(subjects.command_subject(), cb=answer)
        await server.stop_async()
        await asyncio.sleep(1.5)
        await server.start_async()
        deadline = time.monotonic() + 10
        while not client.is_connected:
            assert time.monotonic() < deadline, "the client did not reconnect"
            await asyncio.sleep(0.05)
        assert (await client.request(subjects.command_subject(), b"ping", timeout=5)).data == b"pong"
    finally:
        await client.close()
        await server.stop_async()

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # About three failed attempts in each outage, reported once each; never with the token.
    assert 2 <= len(warnings) <= 5, warnings
    assert sum("ConnectionRefusedError" in w for w in warnings) == 2, warnings
    assert not any(server_token(home) in r.getMessage() for r in caplog.records)
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def server_token(home: Path) -> str:
    return (home / "nats.token").read_text().strip()


async def test_nats_url_is_used_as_is_and_the_embedded_server_only_without_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = reachable_temp_home("tokex-nats-external-")
    external = subprocess.Popen(
        [str(server_binary()), "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", str(run)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not list(run.glob("*.ports")):
            assert time.monotonic() < deadline, "the external nats-server did not start"
            time.sleep(0.02)
        time.sleep(0.05)  # the ports file may be half-written
        url = json.loads(next(run.glob("*.ports")).read_text())["nats"][0]
        monkeypatch.setenv("TOKEX_HOME", str(home))
        monkeypatch.setenv("NATS_URL", url)
        assert nats_url() == url
        client = await connect(url, "test")
        await client.close()
        assert not (home / "natsrun").exists()
        assert psutil.Process(external.pid).is_running()

        monkeypatch.delenv("NATS_URL")
        with EmbeddedNats(home, port=0) as server:
            assert nats_url() == server.url != url
            client = await connect(nats_url(), "test")
            await client.close()
    finally:
        external.terminate()
        external.wait(timeout=10)
        shutil.rmtree(run, ignore_errors=True)


def test_display_url_hides_credentials() -> None:
    assert display_url("nats://secret@127.0.0.1:4250") == "nats://127.0.0.1:4250"
    assert display_url("nats://u:p@a:1, nats://b:2") == "nats://a:1,nats://b:2"


def test_a_taken_port_is_reported_with_what_to_set(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedNats(home, port=taken.getsockname()[1])
        with pytest.raises(EmbeddedNatsError, match="set TOKEX_NATS_PORT to a free port"):
            server.start()
    assert server.running_servers() == []
    monkeypatch.setenv("TOKEX_NATS_PORT", "nats")
    with pytest.raises(EmbeddedNatsError, match="TOKEX_NATS_PORT='nats' is not a port"):
        EmbeddedNats(home).start()
