"""tokex installed from a wheel, not from the source tree, starts on an empty database and migrates it.

The wheel is built as ``pip install .`` builds one (in an isolated build environment), without compiling the book
(``TOKEX_PURE_PYTHON``), and installed without dependencies into a new virtual environment, which borrows the test
environment's third-party packages through a path file (not its tokex, whose editable finder only a site folder's
own path files install). The server runs with the working folder outside the source tree, so nothing but the
wheel's files can be imported.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from exchange.database.migrations import MigrationError, discover, migrate
from exchange.database.queries import STATEMENTS

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(*command: str | Path, **options) -> str:
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_a_server_installed_from_a_wheel_migrates_an_empty_database(fresh_database_url: str,
                                                                          tmp_path: Path) -> None:
    environment = {**os.environ, "TOKEX_PURE_PYTHON": "1"}
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
        tmp_path / "dist", REPOSITORY, env=environment, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("tokex-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel)
    site_packages = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site_packages / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    where = run(python, "-c", "import exchange.database.migrations as m; print(m.__file__); print(m.SQL_DIR)",
                cwd=tmp_path).split()
    assert all(Path(path).is_relative_to(site_packages) for path in where), where
    assert sorted(path.name for path in Path(where[1]).glob("*.sql")) == [m.path.name for m in discover()]
    queries = run(python, "-c", "from exchange.database import queries; "
                  "print(queries.QUERIES_DIR); print(len(queries.STATEMENTS))", cwd=tmp_path).split()
    assert Path(queries[0]).is_relative_to(site_packages), queries
    assert int(queries[1]) == len(STATEMENTS)

    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "tokex"), "serve", "--database-url", fresh_database_url, "--port", str(port)],
        cwd=tmp_path, env={**os.environ, "TOKEX_HOME": str(tmp_path / "home"),
                           "TOKEX_MASTER_KEY": secrets.token_hex(32)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert server.poll() is None, f"the server exited:\n{server.communicate()[0]}"
                assert time.monotonic() < deadline, "the server did not start within 60 s"
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/v1/instruments")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output

    conn = await asyncpg.connect(fresh_database_url)
    try:
        applied = [row[0] for row in await conn.fetch("SELECT version FROM schema_migration ORDER BY version")]
    finally:
        await conn.close()
    assert applied == [m.version for m in discover()]


async def test_a_missing_migrations_folder_is_an_error(fresh_database_url: str, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="no migrations folder"):
        discover(tmp_path / "sql")
    with pytest.raises(MigrationError, match="no migrations folder"):
        await migrate(fresh_database_url, tmp_path / "sql")
