"""The REST routes under `/v1`, one module per resource; `api.app` mounts each module's `Endpoints`."""
