"""The PostgreSQL store (``PostgresStore``): many engines on many hosts share one database."""
