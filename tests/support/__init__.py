"""Plain helpers the test folders share: real servers, databases, feed clients. Fixtures stay in conftest.py files.

    sync          run_sync: a coroutine run to completion from sync code, on its own thread and loop
    databases     databases of their own on the session's PostgreSQL, and a TOKEX_HOME its server user can enter
    broker        embedded NATS servers in a TOKEX_HOME of their own, and what is left of them killed at the end
    api_server    a real API server (uvicorn) on a free port, with or without a new database and first admin
    feed          feed servers, a checking websockets client, an independent level2 rebuild, a traded market
    index_clock   the price index's minute job run on a live server ahead of the wall clock
    fuzz          the schemathesis fuzzers' checks, signers and funded accounts
    pages         every item of a paged API list
    engine        an in-memory engine market for ``Engine.apply``, its state and its invariants
"""
