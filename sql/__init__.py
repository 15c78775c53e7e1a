"""The numbered database migrations, ``NNN_name.sql``: this package's data (``exchange.database.migrations``)."""
