"""The worker's web socket: bound before the worker starts, at the address others reach."""

from __future__ import annotations

import socket

import pytest

from pipeline.config import Config, WorkerSettings
from pipeline.observe.web import listen


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
