"""The asyncio side of receiving: listeners, TLS, and the session glue that turns
protocol events into policy checks and queue commits."""
