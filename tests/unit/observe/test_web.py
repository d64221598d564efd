"""The worker's web socket: bound before the worker starts, at the address others reach."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.config import Config, WorkerSettings
from pipeline.observe.status import Readiness
from pipeline.observe.web import listen, routes
from pipeline.streaming.core import StreamingCore
from pipeline.testing import T0, FakeClock


def config_with(host: str, port: int) -> Config:
    return Config(worker=WorkerSettings(web_host=host, web_port=port))


def test_port_0_takes_a_free_port_and_names_it() -> None:
    listener = listen(config_with("127.0.0.1", 0))
    try:
        port = listener.sock.getsockname()[1]
        assert port != 0
        assert listener.url == f"http://127.0.0.1:{port}"
    finally:
        listener.sock.close()


def test_a_port_in_use_is_refused_at_once() -> None:
    first = listen(config_with("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            listen(config_with("127.0.0.1", first.sock.getsockname()[1]))
    finally:
        first.sock.close()


def test_a_wildcard_address_is_advertised_by_host_name() -> None:
    listener = listen(config_with("0.0.0.0", 0))
    try:
        assert listener.url.startswith(f"http://{socket.gethostname()}:")
    finally:
        listener.sock.close()


# The routes, with a stand-in worker and status (the real ones run in the integration tests)


class Status:
    def __init__(self, ready: bool, mine: bool, owner: str | None) -> None:
        self.ready, self.mine, self.owner = ready, mine, owner

    def readiness(self) -> Readiness:
        if self.ready:
            return Readiness(True, (0,))
        return Readiness(False, (0,), "the table's recovery from its changelog")

    def owner_of(self, device_id: str) -> tuple[int, str | None, bool]:
        return 1, self.owner, self.mine


def stand_in_worker(instance_id: str) -> Any:
    core = StreamingCore(Config(), 2, "by-device", FakeClock(T0))
    config = Config(worker=WorkerSettings(instance_id=instance_id))
    metrics = SimpleNamespace(text=lambda: b"sessionize_devices 0.0\n")
    return SimpleNamespace(config=config, core=core, metrics=metrics, stopped=False)


async def serve(worker: Any, status: Status, url: str) -> TestClient[Any, Any]:
    client = TestClient(TestServer(routes(worker, status, url)))
    await client.start_server()
    return client


async def test_ready_is_503_saying_what_it_waits_for_then_200() -> None:
    worker = stand_in_worker("w1")
    waiting = await serve(worker, Status(False, True, None), "http://w1")
    ready = await serve(worker, Status(True, True, None), "http://w1")
    try:
        reply = await waiting.get("/ready")
        assert reply.status == 503
        assert (await reply.json())["waiting_for"] == "the table's recovery from its changelog"
        assert (await ready.get("/ready")).status == 200
        assert (await ready.get("/healthz")).status == 200
        worker.stopped = True
        assert (await ready.get("/healthz")).status == 503
    finally:
        await waiting.close()
        await ready.close()


async def test_a_lookup_is_forwarded_once_to_the_owner_and_never_again() -> None:
    owner_worker = stand_in_worker("w2")
    # The owner's metadata is stale: it does not hold the device's partition either.
    owner = await serve(owner_worker, Status(True, False, "http://elsewhere"), "http://w2")
    owner_url = str(owner.make_url("")).rstrip("/")
    asker = await serve(stand_in_worker("w1"), Status(True, False, owner_url), "http://w1")
    try:
        reply = await asker.get("/sessions/a1/d1")
        body = await reply.json()
        assert reply.status == 503  # the owner refused to forward a forwarded request
        assert body["answered_by"] == "w2"
        assert "no worker owns its partition right now" in body["error"]
    finally:
        await asker.close()
        await owner.close()


async def test_the_owner_answers_404_for_a_device_it_does_not_know() -> None:
    client = await serve(stand_in_worker("w1"), Status(True, True, "http://w1"), "http://w1")
    try:
        reply = await client.get("/sessions/a1/nobody")
        assert reply.status == 404
        assert (await reply.json())["error"] == "no session known for device 'nobody' of app 'a1'"
        assert (await client.get("/metrics")).headers["Content-Type"].startswith("text/plain")
    finally:
        await client.close()
