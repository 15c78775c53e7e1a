"""The embedded PostgreSQL server, run for real: start, restart, crashes of its owner, root's folders.

Tests that need an owner process to die start the server from a child Python process and signal it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil
import pytest

from exchange.database import Database
from exchange.database.embedded import EmbeddedPostgres, EmbeddedPostgresError

REPO = Path(__file__).resolve().parents[2]
LOCAL_SERVER = "postgresql://postgres@127.0.0.1:5432/test"

# Starts the server, reports "<pid> <owned>", then holds it until stdin closes.
CHILD = textwrap.dedent(
    """
    import sys
    from exchange.database.embedded import EmbeddedPostgres
    server = EmbeddedPostgres(sys.argv[1])
    server.start()
    print(server.pid, server.owned, flush=True)
    sys.stdin.read()
    """
)


def spawn(home: Path) -> subprocess.Popen:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )


def report(child: subprocess.Popen) -> tuple[int, bool]:
    """Wait for the child to have the server; return (postmaster pid, whether the child owns it)."""
    line = child.stdout.readline()
    if not line:
        pytest.fail(f"the child process could not start the server:\n{child.stderr.read()}")
    pid, owned = line.split()
    return int(pid), owned == "True"


async def fetchval(dsn: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
async def test_data_persists_across_stop_and_start(reachable_home: Path) -> None:
    server = EmbeddedPostgres(reachable_home)
    dsn = await server.start_async()
    assert server.owned
    assert await fetchval(dsn, "SELECT current_setting('listen_addresses')") == ""
    durability = "SELECT current_setting('fsync') || current_setting('synchronous_commit')"
    assert await fetchval(dsn, durability) == "onon"
    await fetchval(dsn, "CREATE TABLE kept AS SELECT 42 AS answer")
    first_pid = server.pid

    await server.stop_async()
    await server.stop_async()
    assert not alive(first_pid)
    assert not (server.pgdata / "postmaster.pid").exists()

    dsn = await server.start_async()
    try:
        assert await fetchval(dsn, "SELECT answer FROM kept") == 42
        assert server.running_postmasters() == [server.pid]
    finally:
        await server.stop_async()
    assert server.running_postmasters() == []


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
def test_sigkill_of_the_owner_leaves_an_orphan_the_next_start_adopts(reachable_home: Path) -> None:
    with spawn(reachable_home) as child:
        orphan, owned = report(child)
        assert owned
        child.kill()
    assert alive(orphan), "the server should outlive a SIGKILLed owner"

    server = EmbeddedPostgres(reachable_home)
    dsn = server.start()
    try:
        assert server.pid == orphan
        assert server.owned
        assert server.running_postmasters() == [orphan]
        assert asyncio.run(fetchval(dsn, "SELECT 1")) == 1
    finally:
        server.stop()
    assert not alive(orphan)


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
def test_sigterm_of_the_owner_stops_the_server(reachable_home: Path) -> None:
    with spawn(reachable_home) as child:
        pid, _ = report(child)
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == -signal.SIGTERM
    assert not alive(pid)
    assert EmbeddedPostgres(reachable_home).running_postmasters() == []


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
def test_two_processes_starting_together_share_one_server_and_only_the_owner_stops_it(
    reachable_home: Path,
) -> None:
    with spawn(reachable_home) as first, spawn(reachable_home) as second:
        (pid, first_owns), (other_pid, second_owns) = report(first), report(second)
        assert other_pid == pid
        assert sorted([first_owns, second_owns]) == [False, True]
        assert EmbeddedPostgres(reachable_home).running_postmasters() == [pid]
        owner, guest = (first, second) if first_owns else (second, first)
        guest.stdin.close()
        assert guest.wait(30) == 0
        assert alive(pid)
        owner.stdin.close()
        assert owner.wait(30) == 0
    assert not alive(pid)


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
def test_a_stale_postmaster_pid_does_not_block_start(reachable_home: Path) -> None:
    server = EmbeddedPostgres(reachable_home)
    server.start()
    server.stop()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    # A dead pid, then a live pid that is not a postgres (PostgreSQL alone would refuse that one).
    for stale_pid in (int(dead.stdout), os.getpid()):
        (server.pgdata / "postmaster.pid").write_text(f"{stale_pid}\n{server.pgdata}\n0\n5432\n\n\n\nready\n")
        server.start()
        try:
            assert server.pid != stale_pid
            assert server.running_postmasters() == [server.pid]
        finally:
            server.stop()


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
def test_a_failed_start_reports_the_tail_of_the_server_log(reachable_home: Path) -> None:
    server = EmbeddedPostgres(reachable_home)
    server.start()
    server.stop()
    config = server.pgdata / "postgresql.conf"
    original = config.read_text()
    config.write_text(original + "\nno_such_setting = 1\n")
    with pytest.raises(EmbeddedPostgresError) as caught:
        server.start()
    message = str(caught.value)
    assert "PostgreSQL did not start" in message
    assert f"Last lines of {server.log_path}" in message
    assert 'unrecognized configuration parameter "no_such_setting"' in message
    assert server.running_postmasters() == []

    config.write_text(original)
    server.start()
    server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_an_unreachable_home_says_to_set_tokex_home() -> None:
    private = Path(tempfile.mkdtemp(prefix="tokex-private-"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        server = EmbeddedPostgres(private / "var")
        with pytest.raises(EmbeddedPostgresError) as caught:
            server.start()
        message = str(caught.value)
        assert f"cannot enter {private}" in message
        assert "Set TOKEX_HOME" in message and "/var/lib/tokex" in message
        assert private.stat().st_mode & 0o777 == 0o700, "a folder we do not own must keep its mode"
        assert server.running_postmasters() == []
    finally:
        shutil.rmtree(private)


@pytest.mark.slow  # a drill: starts, kills or stops PostgreSQL servers of its own
async def test_database_starts_the_embedded_server_and_migrates(reachable_home: Path, tmp_path: Path) -> None:
    (tmp_path / "001_note.sql").write_text("CREATE TABLE note (body text);")
    db = Database(home=reachable_home, migrations=tmp_path)
    async with db:
        assert db.applied == [1]
        assert db.embedded is not None
        pid = db.embedded.pid
        assert await fetchval(db.dsn, "SELECT count(*) FROM note") == 0
    assert not alive(pid)


async def test_database_uses_an_external_server_as_it_is(tmp_path: Path) -> None:
    url = os.environ.get("TOKEX_TEST_DATABASE_URL") or LOCAL_SERVER
    try:
        admin = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no external PostgreSQL at {url} ({exc}); set TOKEX_TEST_DATABASE_URL to test this path")
    name = f"tokex_external_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        dsn = urlunsplit(urlsplit(url)._replace(path="/" + name))
        (tmp_path / "001_note.sql").write_text("CREATE TABLE note (body text);")
        async with Database(dsn, migrations=tmp_path) as db:
            assert db.embedded is None
            assert db.dsn == dsn
            assert db.applied == [1]
        assert await fetchval(dsn, "SELECT count(*) FROM schema_migration") == 1
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
