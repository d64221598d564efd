"""Whether a broker answers: one Metadata request on a plain socket, no client to start."""

from __future__ import annotations

import socket
import struct

from aiokafka.protocol.metadata import MetadataRequest_v5, MetadataResponse_v5


def answers_metadata(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether a broker at ``host:port`` answers a Metadata request listing a live broker."""
    host, port = bootstrap.rsplit(":", 1)
    request = MetadataRequest_v5([], False)
    header = request.build_request_header(correlation_id=1, client_id="sessionize-localkafka")
    payload = header.encode() + request.encode()
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.sendall(struct.pack(">i", len(payload)) + payload)
            (size,) = struct.unpack(">i", _receive_exactly(connection, 4))
            body = _receive_exactly(connection, size)
        # The response starts with the 4-byte correlation id.
        response = MetadataResponse_v5.decode(body[4:])
    except (OSError, ValueError, struct.error):
        return False
    return bool(response.get_item("brokers"))


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        chunks += chunk
    return bytes(chunks)
