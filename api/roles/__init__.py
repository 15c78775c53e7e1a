"""The processes of the exchange as a cluster, each a role of the ``tokex`` command.

    tokex engine [--group G]                   the sequencer and the engine: the leader, or a standby waiting for it
    tokex gateway [--rest] [--feed] ...        the HTTP API and/or the WebSocket feed; as many as needed
    tokex cluster [--gateways N] [--standby]   all of them on this machine, supervised

``engine`` runs an engine (``api.roles.engine``), ``gateway`` a gateway (``api.roles.gateway``), ``cluster`` the
supervisor that starts NATS, PostgreSQL, the engines and the gateways as processes and stops them in order
(``api.roles.cluster``). ``tokex serve`` and ``tokex demo`` without ``--gateways`` are still the whole exchange in one
process, with no broker.
"""
