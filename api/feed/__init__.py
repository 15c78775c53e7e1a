"""The market-data feed at ``/v1/ws``: ``protocol`` (what clients send and receive, importing nothing of the
server), ``limits``, ``ladder`` (the books as published), ``connection``, ``hub`` (the fan-out), ``user`` (the
user channel) and ``endpoint`` (one connection's requests)."""
