"""TLS and mutual TLS from certificate files generated here (cryptography)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from tests.support.pki import Pki
from tests.support.servers import running_server

pytestmark = pytest.mark.integration

ORDER = json.dumps({"id": "o-1", "status": "received", "details": {"type": "testkit"}})
REQUEST = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=ORDER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"), "other-ca")


def _decide(address: str, credentials: grpc.ChannelCredentials) -> pb.DecideResponse:
    with grpc.secure_channel(address, credentials) as channel:
        return pb_grpc.OrderPolicyServiceStub(channel).Decide(REQUEST, timeout=10)


def test_tls_serves_clients_that_trust_the_ca(bundle_dir, pki: Pki) -> None:
    """With --tls-cert/--tls-key a client trusting the CA gets decisions over TLS."""
    with running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=pki.server_key) as address:
        creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        assert _decide(address, creds).decision.outcome == pb.OUTCOME_ALLOW


def test_tls_refuses_plaintext_and_untrusted_clients(bundle_dir, pki: Pki, other_pki: Pki) -> None:
    """A plaintext client or one trusting another CA cannot call a TLS server."""
    with running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=pki.server_key) as address:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.OrderPolicyServiceStub(channel).Decide(REQUEST, timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as info:
            _decide(address, grpc.ssl_channel_credentials(other_pki.ca.read_bytes()))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate_from_the_client_ca(bundle_dir, pki: Pki, other_pki: Pki) -> None:
    """With --tls-client-ca only clients presenting a certificate of that CA get answers."""
    opts = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    with running_server(bundle_dir, **opts) as address:
        good = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes()
        )
        assert _decide(address, good).decision.outcome == pb.OUTCOME_ALLOW
        with pytest.raises(grpc.RpcError) as info:
            _decide(address, grpc.ssl_channel_credentials(pki.ca.read_bytes()))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            pki.ca.read_bytes(),
            other_pki.client_key.read_bytes(),
            other_pki.client_cert.read_bytes(),
        )
        with pytest.raises(grpc.RpcError) as info:
            _decide(address, foreign)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unreadable_tls_file_is_a_clear_error(bundle_dir, tmp_path: Path, pki: Pki) -> None:
    """A missing key file fails to start with a message naming the file."""
    from server.app import ServeError

    missing = tmp_path / "missing.key"
    with (
        pytest.raises(ServeError, match="missing.key"),
        running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=missing),
    ):
        pass
    with pytest.raises(ServeError, match="--tls-key"), running_server(bundle_dir, tls_cert=pki.server_cert):
        pass
