"""The database the exchange runs on: the embedded PostgreSQL server, its migrations and the named statements.

`opening.Database` opens it (the server named by DATABASE_URL, or the embedded one in TOKEX_HOME) and migrates
it; `embedded` supervises the embedded server's process; `migrations` applies `sql/NNN_name.sql`; `queries`
hands out the statements of `sql/queries/` by name.
"""

from exchange.database.opening import Database

__all__ = ["Database"]
