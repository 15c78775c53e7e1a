"""The settings tokex reads from its environment, in one place; each is read when asked for, not at import.

TOKEX_HOME
    The folder of a server's own state: the embedded PostgreSQL (`exchange.database.embedded`), the embedded
    NATS server (`exchange.broker.embedded`) and the API's master key file. Default `./var`, made absolute.
DATABASE_URL
    An external PostgreSQL to run on; it is only migrated, never started or stopped. Unset or empty: the
    embedded server in TOKEX_HOME.
NATS_URL
    An external NATS server (or several, comma-separated) for market data. Unset or empty: the embedded one
    in TOKEX_HOME.
TOKEX_NATS_PORT
    The port of the embedded NATS server; default 4250, 0 for any free one. The broker checks the value.
TOKEX_HOST, TOKEX_PORT
    Where `tokex serve` and `tokex demo` listen; default 127.0.0.1 and 8000 (0 picks a free port).
TOKEX_DATASET_FILE_MAX_BYTES
    The largest dataset file an issuer may upload, in bytes; default 256 MiB.
"""

import os
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_NATS_PORT = 4250
DEFAULT_DATASET_FILE_MAX_BYTES = 256 * 1024 * 1024


def tokex_home() -> Path:
    """Return TOKEX_HOME as an absolute path (default ./var)."""
    return Path(os.environ.get("TOKEX_HOME") or "var").expanduser().absolute()


def database_url() -> str | None:
    """Return DATABASE_URL, or None for the embedded server."""
    return os.environ.get("DATABASE_URL") or None


def nats_url() -> str | None:
    """Return NATS_URL, or None for the embedded server."""
    return os.environ.get("NATS_URL", "").strip() or None


def nats_port() -> str:
    """Return TOKEX_NATS_PORT as given, or the default port."""
    return os.environ.get("TOKEX_NATS_PORT") or str(DEFAULT_NATS_PORT)


def listen_host() -> str:
    """Return TOKEX_HOST, or 127.0.0.1."""
    return os.environ.get("TOKEX_HOST") or DEFAULT_HOST


def listen_port() -> int:
    """Return TOKEX_PORT, or 8000."""
    return int(os.environ.get("TOKEX_PORT") or DEFAULT_PORT)


def dataset_file_max_bytes() -> int:
    """Return TOKEX_DATASET_FILE_MAX_BYTES, or 256 MiB."""
    return int(os.environ.get("TOKEX_DATASET_FILE_MAX_BYTES") or DEFAULT_DATASET_FILE_MAX_BYTES)
