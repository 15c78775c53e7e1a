"""What one feed connection may do and be owed."""

from dataclasses import dataclass

from api.feed.protocol import MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class FeedLimits:
    """What one connection may do and be owed; the defaults suit a public server."""

    max_connections_per_address: int = 50
    max_subscriptions: int = 50
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Above the server's frame limit this has no effect: a longer frame closes the connection first."""
    message_rate: float = 10.0
    message_burst: float = 30.0
    max_errors: int = 10
    max_queue: int = 256
    """Frames waiting for one connection; a frame holds whatever accumulated during one flush interval."""
    max_queue_bytes: int = 8 * 1024 * 1024
    flush_interval: float = 0.05
    """The longest wait between two flushes. Every flush costs one send per subscriber, which dominates the feed's
    work: under load a longer interval costs the server less, and the slowest messages arrive sooner, because
    sends no longer queue behind each other (``loadtest/README.md`` has the figures)."""
    flush_spacing: float = 4.0
    """A flush that took ``t`` seconds of the hub's time is followed by the next ``t x flush_spacing`` seconds after
    it began at the soonest (``flush_interval`` at most): the feed keeps about a quarter of the loop under load,
    and an update on a quiet server goes out at once."""
    delivery_chunk: int = 64
    """Connections per delivery group (a flush builds and hands over one group's frames per turn of the event
    loop), and frames handed over per turn otherwise."""
    heartbeat_interval: float = 1.0
    close_timeout: float = 5.0
