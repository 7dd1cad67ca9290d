"""The server's options (`soundflow serve` fills them), checked when made: below the server
and the sessions and workers it runs, which read them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

BATCH_MODES = ("off", "encoder", "full")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    max_streams: int = 64
    token: str | None = None
    batch: str = (
        "off"  # "off" (one call per stream, measured fastest on 2 CPU cores) | "encoder" | "full"
    )
    max_wait_ms: float = 20.0  # wait at most this for other streams' chunks before a batch
    max_batch: int = 64  # streams per batched call
    max_frame_bytes: int = 1 << 18  # 256 KiB: 8 s of 16 kHz s16le mono
    buffer_s: float = 10.0  # PCM a session holds before the oldest is dropped (live)
    # A client that does not read its events is dropped (close 4001) once more than
    # max_pending_events wait behind what its connection buffers: the kernel's send buffer
    # (autotuned, up to MBs on loopback) and the WebSocket layer's write limit (32 KiB);
    # send_buffer_bytes sets both (SO_SNDBUF and the write limit), so it comes sooner.
    max_pending_events: int = 256
    send_buffer_bytes: int | None = None
    hello_timeout_s: float = 10.0
    # worker threads, each driving its own sessions (a new one goes to the least loaded);
    # size ONNX Runtime's threads so that workers x threads = cores (`soundflow serve` does)
    workers: int = 1
    # a worker busy for more than ADAPT_UP of the last few seconds reads its live caption
    # streams every second chunk (staggered, the chunks between not encoded) until it is
    # busy less than ADAPT_DOWN: about twice the streams a core, at hop 2's words (False:
    # every stream reads at its own hop whatever the load; a hello's caption_hop always wins)
    adaptive_hop: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers {self.workers} must be 1 or more")
        if self.batch not in BATCH_MODES:
            raise ValueError(f"batch {self.batch!r}: use one of {BATCH_MODES}")
        if self.max_streams < 1:
            raise ValueError(f"max_streams {self.max_streams} must be 1 or more")
        if self.send_buffer_bytes is not None and self.send_buffer_bytes < 1:
            raise ValueError(f"send_buffer_bytes {self.send_buffer_bytes} must be 1 or more")
        if not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"refusing to serve on {self.host} without a token: anyone who can reach it "
                "could use the server; pass --token T (clients send it in their hello), or "
                "bind to 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
