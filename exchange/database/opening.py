"""Open the exchange's database: the server named by DATABASE_URL, or the embedded one; then migrate.

    async with Database.from_env() as db:
        pool = await asyncpg.create_pool(db.dsn)

An external server is used as it is: nothing is started or stopped there, it is only migrated.
Without one, the embedded server of `exchange.database.embedded` is started in TOKEX_HOME and stopped by `stop()`.
"""

from __future__ import annotations

from pathlib import Path

from exchange import config
from exchange.database.embedded import EmbeddedPostgres
from exchange.database.migrations import migrate


class Database:
    """The database the exchange runs on, from start to stop."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        home: Path | str | None = None,
        migrations: Path | None = None,
    ) -> None:
        self.database_url = database_url or None
        self.home = home
        self.migrations = migrations
        self.embedded: EmbeddedPostgres | None = None
        self.applied: list[int] = []
        self._dsn: str | None = None

    @classmethod
    def from_env(cls) -> Database:
        """Use DATABASE_URL if set, else the embedded server in TOKEX_HOME."""
        return cls(config.database_url())

    @property
    def dsn(self) -> str:
        if self._dsn is None:
            raise RuntimeError("the database is not started; call `await Database.start()` first")
        return self._dsn

    async def start(self) -> str:
        """Start the embedded server if there is no external one, apply migrations, return the DSN."""
        if self._dsn is not None:
            return self._dsn
        if self.database_url is not None:
            dsn = self.database_url
        else:
            self.embedded = EmbeddedPostgres(self.home)
            dsn = await self.embedded.start_async()
        try:
            self.applied = await migrate(dsn, self.migrations)
        except BaseException:
            await self.stop()
            raise
        self._dsn = dsn
        return dsn

    async def stop(self) -> None:
        """Stop the embedded server if we started it. Idempotent."""
        self._dsn = None
        if self.embedded is not None:
            await self.embedded.stop_async()
            self.embedded = None

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
