"""``order-policy health``: exit 0 only when the server says SERVING."""

from __future__ import annotations

import pytest

from server.cli import main
from tests.support.pki import Pki
from tests.support.servers import free_port, serving

pytestmark = pytest.mark.integration


def test_health_probe_exits_0_when_serving(server_address: str, capsys) -> None:
    """A loaded server is SERVING: exit 0."""
    assert main(["health", "--address", server_address]) == 0
    assert "SERVING" in capsys.readouterr().out


def test_health_probe_exits_1_without_a_bundle(capsys) -> None:
    """A server with no bundle is NOT_SERVING: exit 1."""
    with serving(None) as server:
        assert main(["health", "--address", server.address]) == 1
    assert "NOT_SERVING" in capsys.readouterr().out


def test_health_probe_exits_1_when_nothing_listens(capsys) -> None:
    """No server at the address: exit 1 with the gRPC error."""
    assert main(["health", "--address", f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_health_probe_speaks_mtls(bundle_dir, tmp_path) -> None:
    """With --tls-ca/--tls-cert/--tls-key the probe reaches an mTLS server."""
    pki = Pki(tmp_path)
    opts = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    with serving(bundle_dir, **opts) as server:
        args = ["health", "--address", server.address, "--tls-ca", str(pki.ca)]
        assert main(args) == 1  # no client certificate
        assert main([*args, "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)]) == 0
