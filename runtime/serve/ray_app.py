"""`soundflow serve --ray`: the same WebSocket server as replicas of a Ray Serve deployment,
each holding one engine and many streams behind Ray's proxy, health-checked and scalable.

The `ray` extra (`pip install 'soundflow[ray]'`); nothing else in soundflow imports this
module, so the single-box server and the runtime core never load Ray or FastAPI.

On a cluster of your own (docs/deploy.md):

    serve run soundflow.runtime.serve.ray_app:build replicas=4 token=$TOKEN

or in Python: `serve.run(application(scale=RayOptions(replicas=4)), route_prefix="/")`.
"""

# No `from __future__ import annotations` here: FastAPI must see the route's `WebSocket`
# annotation as the class, or Ray's class-based view rejects every connection (HTTP 403).
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fastapi import FastAPI, WebSocket
from ray import serve
from ray.serve.deployment import Application

from soundflow.runtime.options import RuntimeOptions
from soundflow.runtime.serve.protocol import CLOSE_TOO_BIG
from soundflow.runtime.serve.server import Server, ServerConfig

DEPLOYMENT = "soundflow"
# Close code of a stream whose replica died (RFC 6455's "service restart"): its client
# reconnects and Ray's proxy routes it to a live replica. Sent by ReplicaLostClose.
CLOSE_REPLICA_LOST = 1012
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
log = logging.getLogger("ray.serve")  # lands in the replica's log under the Ray session dir


@dataclass(frozen=True)
class RayOptions:
    """How the deployment scales; the stream limits and token are ServerConfig's."""

    replicas: int = 2  # fixed replica count, unless max_replicas > replicas
    max_replicas: int | None = None  # > replicas: Ray's autoscaler between the two
    # streams per replica the autoscaler aims at (a WebSocket is one ongoing request for
    # its whole life); benchmarks/results/serve_workers.json sizes it (docs/deploy.md)
    target_streams: int = 4
    cpus_per_replica: float = 1.0  # Ray's num_cpus of each replica actor
    health_check_period_s: float = 5.0
    health_check_timeout_s: float = 30.0
    # a replica Ray stops (downscale, redeploy) waits this long for its open streams to
    # end; a live stream still open then is cut and its client reconnects elsewhere
    graceful_shutdown_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas {self.replicas} must be 1 or more")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                f"max_replicas {self.max_replicas} must be at least replicas {self.replicas}"
            )
        if self.target_streams < 1:
            raise ValueError(f"target_streams {self.target_streams} must be 1 or more")


class _Connection:
    """A Starlette WebSocket as `Server.handle` sees a `websockets` connection: recv /
    send / close, its request's headers, ConnectionClosed when the peer goes. So the
    replica runs the single-box server's own handler: one protocol, not a copy of it."""

    def __init__(self, ws: WebSocket, max_frame_bytes: int, replica: str) -> None:
        self.ws = ws
        self.request = ws  # `.headers`, as websockets' Request has
        self.remote_address = (ws.client.host, ws.client.port) if ws.client else None
        self.transport = None  # only read for send_buffer_bytes, which a replica leaves unset
        self.max_frame_bytes = max_frame_bytes
        self.replica = replica
        self.close_code: int | None = None
        self._sent_ready = False

    @staticmethod
    def _closed(rcvd: tuple[int, str] | None = None, sent: tuple[int, str] | None = None):
        from websockets.exceptions import ConnectionClosed
        from websockets.frames import Close

        return ConnectionClosed(
            Close(*rcvd) if rcvd else None, Close(*sent) if sent else None, rcvd is not None
        )

    async def recv(self) -> str | bytes:
        if self.close_code is not None:
            raise self._closed(sent=(self.close_code, ""))
        try:
            msg = await self.ws.receive()
        except RuntimeError:  # starlette: receive after the disconnect was read
            raise self._closed(sent=(self.close_code or 1006, "")) from None
        if msg["type"] == "websocket.disconnect":
            self.close_code = int(msg.get("code") or 1005)
            raise self._closed(rcvd=(self.close_code, msg.get("reason") or ""))
        data = msg.get("bytes")
        if data is None:
            return msg.get("text") or ""
        if len(data) > self.max_frame_bytes:  # what websockets' max_size does on one box
            await self.close(CLOSE_TOO_BIG, "frame too big")
            raise self._closed(sent=(CLOSE_TOO_BIG, "frame too big"))
        return data

    async def send(self, text: str) -> None:
        if not self._sent_ready:
            self._sent_ready = True
            d = json.loads(text)
            if d.get("type") == "ready":  # which replica holds the stream (ops, tests)
                text = json.dumps({**d, "replica": self.replica})
        try:
            await self.ws.send_text(text)
        except Exception:  # noqa: BLE001 - starlette/Ray raise several kinds once it is gone
            raise self._closed(sent=(self.close_code or 1006, "")) from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is not None:
            return
        self.close_code = code
        try:
            await self.ws.close(code, reason)
        except Exception:  # noqa: BLE001 - the client is gone already
            pass


class ReplicaLostClose:
    """ASGI middleware for Ray's proxy: a WebSocket whose replica died mid-stream gets
    close 1012 instead of a dropped TCP connection (1006), so its client knows to reconnect.
    `soundflow serve --ray` installs it; on a cluster of your own set
    RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=soundflow.runtime.serve.ray_app:proxy_middlewares
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        state = {"accepted": False, "over": False}

        async def receive_tracked():
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                state["over"] = True  # the client went: nothing to tell it
            return msg

        async def send_tracked(msg) -> None:
            if msg["type"] == "websocket.accept":
                state["accepted"] = True
            elif msg["type"] == "websocket.close":
                state["over"] = True
            await send(msg)

        try:
            await self.app(scope, receive_tracked, send_tracked)
        finally:
            # The proxy's call into the replica ended without the replica closing: it died
            # (the proxy swallows ActorDiedError once the response has started).
            if state["accepted"] and not state["over"]:
                try:
                    await send(
                        {
                            "type": "websocket.close",
                            "code": CLOSE_REPLICA_LOST,
                            "reason": "replica lost; reconnect",
                        }
                    )
                except Exception:  # noqa: BLE001 - the client is gone too
                    pass


def proxy_middlewares() -> list:
    """RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH target: the proxy's middlewares."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLostClose)]


_api = FastAPI(title="soundflow", docs_url=None, redoc_url=None, openapi_url=None)


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64)
@serve.ingress(_api)
class SoundflowReplica:
    """One replica: one engine, one `Server` (its worker threads, its sessions) without a
    listening socket of its own; Ray's proxy hands it the WebSocket connections."""

    def __init__(
        self,
        bundle: str | None,
        options: RuntimeOptions,
        variant: str,
        config: ServerConfig,
    ) -> None:
        from soundflow.runtime.kinds import open_engine

        self.engine = open_engine(bundle, options, variant=variant)
        context = serve.get_replica_context()
        self.replica = context.replica_id.to_full_id_str()  # its Ray actor's name
        self.server = Server(self.engine, config, lambda m: log.info("soundflow: %s", m))
        for w in self.server.workers:
            w.thread.start()
        spec = self.engine.spec
        log.info(
            "soundflow replica %s: %s · %s · %d worker(s) · max %d streams",
            self.replica,
            spec.label,
            self.engine.provider,
            config.workers,
            config.max_streams,
        )

    @_api.websocket("/")
    async def stream(self, ws: WebSocket) -> None:
        await ws.accept()
        conn = _Connection(ws, self.server.config.max_frame_bytes, self.replica)
        await self.server.handle(conn)

    @_api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {"replica": self.replica, "streams": len(self.server.sessions)}

    async def check_health(self) -> None:
        """Ray calls this every health_check_period_s; raising restarts the replica."""
        dead = [w.index for w in self.server.workers if not w.thread.is_alive()]
        if dead:
            raise RuntimeError(f"soundflow worker thread(s) {dead} died")

    def __del__(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            for w in server.workers:
                w.stopping.set()
            server.wake()


def application(
    bundle: str | None = None,
    *,
    options: RuntimeOptions | None = None,
    variant: str = "fp32",
    config: ServerConfig | None = None,
    scale: RayOptions | None = None,
) -> Application:
    """The Ray Serve application: `serve.run(application(...), route_prefix="/")`."""
    options = options or RuntimeOptions.from_flags(asynchronous=False)
    scale = scale or RayOptions()
    # The replica serves no socket itself: Ray's proxy binds (and checks nothing), so the
    # token rule is the caller's (`soundflow serve --ray` applies ServerConfig's).
    config = replace(config or ServerConfig(), host="127.0.0.1", port=0, send_buffer_bytes=None)
    deployment_options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": scale.cpus_per_replica},
        "max_ongoing_requests": config.max_streams,
        "health_check_period_s": scale.health_check_period_s,
        "health_check_timeout_s": scale.health_check_timeout_s,
        "graceful_shutdown_timeout_s": scale.graceful_shutdown_timeout_s,
    }
    if scale.max_replicas is not None and scale.max_replicas > scale.replicas:
        deployment_options["num_replicas"] = "auto"
        deployment_options["autoscaling_config"] = {
            "min_replicas": scale.replicas,
            "initial_replicas": scale.replicas,
            "max_replicas": scale.max_replicas,
            "target_ongoing_requests": scale.target_streams,
        }
    else:
        deployment_options["num_replicas"] = scale.replicas
    return SoundflowReplica.options(**deployment_options).bind(bundle, options, variant, config)


def build(args: dict[str, str]) -> Application:
    """`serve run soundflow.runtime.serve.ray_app:build key=value ...`: bundle, replicas,
    max_replicas, target_streams, cpus_per_replica, threads, workers, max_streams, token,
    int8 (true/false), caption_budget_ms."""
    a = dict(args)

    def num(key: str, kind: Callable[[str], Any], default: Any = None) -> Any:
        return kind(a.pop(key)) if key in a else default

    scale = RayOptions(
        replicas=num("replicas", int, 2),
        max_replicas=num("max_replicas", int),
        target_streams=num("target_streams", int, 4),
        cpus_per_replica=num("cpus_per_replica", float, 1.0),
    )
    options = RuntimeOptions.from_flags(
        threads=num("threads", int),
        asynchronous=False,
        caption_budget_ms=num("caption_budget_ms", float),
    )
    config = ServerConfig(
        workers=num("workers", int, 1),
        max_streams=num("max_streams", int, 64),
        token=a.pop("token", None) or os.environ.get("SOUNDFLOW_TOKEN") or None,
    )
    variant = "int8" if str(a.pop("int8", "false")).lower() in ("1", "true", "yes") else "fp32"
    bundle = a.pop("bundle", None)
    if a:
        raise ValueError(f"unknown argument(s) {sorted(a)}; known: see ray_app.build's docstring")
    return application(bundle, options=options, variant=variant, config=config, scale=scale)


def start_local(
    app: Application,
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    log_to_driver: bool = False,
) -> None:
    """Start a one-machine Ray cluster and serve `app` on host:port through Ray's proxy
    (returns once every replica is up; `stop_local()` ends both)."""
    import ray

    # Read by Ray's proxy when it starts (a process of the cluster started here, which
    # inherits this environment): HTTPOptions no longer takes middlewares.
    os.environ.setdefault(PROXY_CALLBACK_ENV, f"{__name__}:proxy_middlewares")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name="soundflow", route_prefix="/")
    except BaseException:
        stop_local()
        raise


def stop_local() -> None:
    import ray

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def run_local(
    app: Application,
    host: str,
    port: int,
    num_cpus: int | None = None,
    log_to_driver: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """`start_local`, then serve until SIGTERM/SIGINT, then `stop_local`."""
    start_local(app, host, port, num_cpus, log_to_driver)
    try:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if on_ready is not None:
            on_ready()
        while not stop.wait(0.5):
            pass
    finally:
        stop_local()
