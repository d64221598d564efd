"""The worker's HTTP endpoint (aiohttp), on `[worker] web_host`:`web_port` (127.0.0.1:6066).

- `GET /metrics`: Prometheus text (`pipeline.observe.metrics`);
- `GET /healthz`: 200 while the process and its event loop run (it answers at all), 503 once
  the worker is stopping;
- `GET /ready`: 200 when the worker has input partitions, its table is recovered and its
  producer is up; 503 otherwise, saying what it waits for;
- `GET /sessions/{app_id}/{device_id}`: the device's open session or its last closed one
  (`pipeline.observe.lookup`), answered by the worker that owns the device's partition: any
  other worker forwards the request there, once (`pipeline.observe.status` says how it knows
  where).

The socket is bound before the worker starts (`listen`), so a port in use is one line at
start-up, and port 0 takes a free one, which the start-up line names.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp
import mode
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from pipeline.config import Config
from pipeline.observe.logs import log_start
from pipeline.observe.lookup import device_view
from pipeline.observe.status import WorkerStatus
from pipeline.streaming.worker import SessionWorker

log = logging.getLogger("sessionize.worker")

FORWARDED = "X-Sessionize-Forwarded-By"  # set on a lookup one worker forwards to another
FORWARD_TIMEOUT_S = 5.0
READY_CHECK_S = 0.5  # how often the ready line's condition is looked at


@dataclass(frozen=True, slots=True)
class Listener:
    """The worker's bound web socket and the address other workers reach it at."""

    sock: socket.socket
    url: str


def listen(config: Config) -> Listener:
    """Bind `[worker] web_host`:`web_port` (OSError if it cannot be)."""
    host, port = config.worker.web_host, config.worker.web_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    # A wildcard address is no address to give others: the host's name is.
    advertised = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in advertised:
        advertised = f"[{advertised}]"
    return Listener(sock, f"http://{advertised}:{bound}")


def routes(worker: SessionWorker, status: WorkerStatus, url: str) -> web.Application:
    """The aiohttp application of one worker."""
    instance = worker.config.worker.instance_id
    client: dict[str, aiohttp.ClientSession] = {}

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=worker.metrics.text(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(_: web.Request) -> web.Response:
        if worker.stopped:
            return web.json_response({"alive": False, "why": "the worker is stopping"}, status=503)
        return web.json_response({"alive": True, "instance_id": instance})

    async def ready(_: web.Request) -> web.Response:
        readiness = status.readiness()
        body = {
            "ready": readiness.ready,
            "instance_id": instance,
            "partitions": list(readiness.partitions),
        }
        if not readiness.ready:
            body["waiting_for"] = readiness.waiting_for
        return web.json_response(body, status=200 if readiness.ready else 503)

    async def session(request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        device_id = request.match_info["device_id"]
        partition, owner, mine = status.owner_of(device_id)
        readiness = status.readiness()
        answer: dict[str, Any] = {"partition": partition, "answered_by": instance, "url": url}
        if mine and readiness.ready:
            view = device_view(worker.core, app_id, device_id)
            if view is None:
                answer["error"] = f"no session known for device {device_id!r} of app {app_id!r}"
                return web.json_response(answer, status=404)
            return web.json_response({**answer, **view})
        if mine or request.headers.get(FORWARDED) or owner is None or owner == url:
            # Not answerable here, and not to be forwarded (again): a rebalance or recovery.
            why = readiness.waiting_for if mine else "no worker owns its partition right now"
            answer["error"] = f"partition {partition} cannot answer now: {why}"
            return web.json_response(answer, status=503, headers={"Retry-After": "1"})
        return await forward(request, owner)

    async def forward(request: web.Request, owner: str) -> web.Response:
        if "session" not in client:
            timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
            client["session"] = aiohttp.ClientSession(timeout=timeout)
        try:
            async with client["session"].get(
                owner + request.raw_path, headers={FORWARDED: instance}
            ) as reply:
                body = await reply.read()
                return web.Response(body=body, status=reply.status, content_type="application/json")
        except (TimeoutError, aiohttp.ClientError) as exc:
            error = f"the owner of the device at {owner} did not answer ({type(exc).__name__})"
            return web.json_response({"error": error, "answered_by": instance}, status=502)

    async def close_client(_: web.Application) -> None:
        if "session" in client:
            await client["session"].close()

    application = web.Application()
    application.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/ready", ready),
            web.get("/sessions/{app_id}/{device_id}", session),
        ]
    )
    application.on_cleanup.append(close_client)
    return application


class WebService(mode.Service):
    """Serves the worker's endpoint from before the table recovers until the worker stops;
    logs the start-up line, the ready line and the progress lines."""

    def __init__(self, worker: SessionWorker, listener: Listener | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        self.listener = listener
        self.status = WorkerStatus(worker)
        self.runner: web.AppRunner | None = None
        worker.metrics.watch(self.status.held)

    async def on_start(self) -> None:
        worker = self.worker
        url = self.listener.url if self.listener is not None else None
        log_start(
            worker.config,
            self.status.changelog,
            worker.repartition_topic.get_topic_name(),
            url,
        )
        if self.listener is None:
            return
        self.runner = web.AppRunner(routes(worker, self.status, self.listener.url), access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.listener.sock).start()

    async def on_stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @mode.Service.task
    async def _watch(self) -> None:
        interval = self.worker.config.worker.progress_interval_s
        next_progress = asyncio.get_running_loop().time() + interval
        while not self.should_stop:
            await self.sleep(READY_CHECK_S)
            if self.worker.stopped:
                continue
            self.status.note()
            if asyncio.get_running_loop().time() >= next_progress:
                next_progress += interval
                self.status.progress()
