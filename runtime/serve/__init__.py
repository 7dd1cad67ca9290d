"""`soundflow serve`: many live streams over WebSocket from one engine, and its client
(ARCHITECTURE.md, "Serving many streams"; README.md, "Serve", has the protocol)."""

from soundflow.runtime.serve.client import ServerError, ServerStream, send_source, stream_source
from soundflow.runtime.serve.protocol import Hello, ProtocolError, parse_hello
from soundflow.runtime.serve.server import BackgroundServer, Server, ServerConfig, run_server

__all__ = [
    "BackgroundServer",
    "Hello",
    "ProtocolError",
    "Server",
    "ServerConfig",
    "ServerError",
    "ServerStream",
    "parse_hello",
    "run_server",
    "send_source",
    "stream_source",
]
