"""TLS and mutual TLS from certificate files generated here (cryptography)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.testing import running_server

pytestmark = pytest.mark.integration

ORDER = json.dumps({"id": "o-1", "status": "received", "details": {"type": "testkit"}})
REQUEST = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=ORDER)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool, usage=None):  # noqa: ANN001, ANN202
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]),
                critical=False,
            )
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.dir = directory
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert(name, ca_key, None, None, ca=True)
        self.ca = self._write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
        for role, usage in (("server", ExtendedKeyUsageOID.SERVER_AUTH),
                            ("client", ExtendedKeyUsageOID.CLIENT_AUTH)):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _cert(f"{role}.test", key, ca.subject, ca_key, ca=False, usage=usage)
            setattr(self, f"{role}_cert", self._write(f"{role}.pem",
                                                      cert.public_bytes(serialization.Encoding.PEM)))
            setattr(self, f"{role}_key", self._write(f"{role}.key", _pem_key(key)))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"), "other-ca")


def _decide(address: str, credentials: grpc.ChannelCredentials) -> pb.DecideResponse:
    with grpc.secure_channel(address, credentials) as channel:
        return pb_grpc.OrderPolicyServiceStub(channel).Decide(REQUEST, timeout=10)


def test_tls_serves_clients_that_trust_the_ca(bundle_dir, pki: Pki) -> None:  # noqa: ANN001
    """With --tls-cert/--tls-key a client trusting the CA gets decisions over TLS."""
    with running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=pki.server_key) as address:
        creds = grpc.ssl_channel_credentials(pki.ca.read_bytes())
        assert _decide(address, creds).decision.outcome == pb.OUTCOME_ALLOW


def test_tls_refuses_plaintext_and_untrusted_clients(bundle_dir, pki: Pki, other_pki: Pki) -> None:  # noqa: ANN001
    """A plaintext client or one trusting another CA cannot call a TLS server."""
    with running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=pki.server_key) as address:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.OrderPolicyServiceStub(channel).Decide(REQUEST, timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as info:
            _decide(address, grpc.ssl_channel_credentials(other_pki.ca.read_bytes()))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate_from_the_client_ca(  # noqa: D103
    bundle_dir, pki: Pki, other_pki: Pki  # noqa: ANN001
) -> None:
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
            pki.ca.read_bytes(), other_pki.client_key.read_bytes(),
            other_pki.client_cert.read_bytes(),
        )
        with pytest.raises(grpc.RpcError) as info:
            _decide(address, foreign)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unreadable_tls_file_is_a_clear_error(bundle_dir, tmp_path: Path, pki: Pki) -> None:  # noqa: ANN001
    """A missing key file fails to start with a message naming the file."""
    from server.app import ServeError

    missing = tmp_path / "missing.key"
    with pytest.raises(ServeError, match="missing.key"), \
            running_server(bundle_dir, tls_cert=pki.server_cert, tls_key=missing):
        pass
    with pytest.raises(ServeError, match="--tls-key"), running_server(bundle_dir, tls_cert=pki.server_cert):
        pass
