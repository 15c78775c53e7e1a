"""The named statements, ``sql/queries/<concern>.sql``: this package's data (``exchange.database.queries``)."""
