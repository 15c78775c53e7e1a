"""The numbered database migrations, ``NNN_name.sql``: shipped as this package's data (``exchange.migrations``)."""
