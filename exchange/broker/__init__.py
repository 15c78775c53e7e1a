"""The message broker between tokex processes: NATS with JetStream.

One process (`tokex serve`) needs none of this. When the exchange runs as several processes (engines,
gateways), they talk over NATS: commands by request/reply, committed market data and user events through
JetStream. `embedded` runs a private NATS server in TOKEX_HOME the way `exchange.database.embedded` runs PostgreSQL,
`connection` says which server a process uses and connects to it, and `subjects` names what flows where.
"""
