"""Nothing leaves the machine, nothing runs from a model folder."""
from __future__ import annotations

import socket
import urllib.request

import pytest


# ---------------------------------------------------------------------- network
def test_outbound_connections_are_refused_and_fail_the_test(_no_network):
    """The autouse guard in conftest: a connection beyond loopback raises and is recorded (failing the test)."""
    with pytest.raises(ConnectionRefusedError, match="outbound network is blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    with pytest.raises(OSError):
        urllib.request.urlopen("http://example.com", timeout=1)
    s = socket.socket()
    try:
        with pytest.raises(ConnectionRefusedError):
            s.connect_ex(("8.8.8.8", 53))
    finally:
        s.close()
    assert len(_no_network) >= 3 and any("example.com" in a for a in _no_network)
    _no_network.clear()     # recorded on purpose here: do not fail this test at teardown


def test_loopback_stays_open():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        with socket.create_connection(("localhost", port), timeout=2):
            pass
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert socket.getaddrinfo("localhost", port)
    finally:
        server.close()
