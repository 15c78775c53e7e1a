"""HTTP and WebSocket adapters and the tokex command."""
