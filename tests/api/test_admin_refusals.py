"""Admin Activate answers a status with the reason for every refusal, never UNKNOWN."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
from server.api.admin import AdminAuth, BundleAdminServicer
from server.bundle.archive import build_archive
from server.lifecycle import BundleManager, StateDir
from server.registry import Registry
from tests.lifecycle.test_activation import replace_member
from tests.support.bundles import bundle_variant


class _Aborted(Exception):
    pass


class _Context:
    """The part of grpc.ServicerContext the admin servicer uses (loopback, admin token)."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", "Bearer t")]

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted


@pytest.mark.parametrize(
    ("breakage", "code"),
    [
        ("empty", grpc.StatusCode.INVALID_ARGUMENT),
        ("invalid_utf8", grpc.StatusCode.FAILED_PRECONDITION),
        ("mixed_keys", grpc.StatusCode.FAILED_PRECONDITION),
        ("disk_full", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_admin_activate_refusals_carry_a_status_and_the_reason(tmp_path: Path, breakage: str, code, monkeypatch):
    from server.api.admin import hash_token

    manager = BundleManager(Registry(), state=StateDir(tmp_path / "state"))
    servicer = BundleAdminServicer(manager, AdminAuth([hash_token("t")]))
    out = tmp_path / "b.tar.gz"
    build_archive(bundle_variant(tmp_path / "b", revision="b"), out)
    data = out.read_bytes()
    if breakage == "empty":
        data = b""
    elif breakage == "invalid_utf8":
        data = replace_member(data, "data/catalogue.yaml", b"reasons: \xff\n")
    elif breakage == "mixed_keys":
        data = replace_member(data, "data/catalogue.yaml", b"reasons: {1: a, b: c}\n")
    else:
        monkeypatch.setattr(manager.state, "store", lambda data: (_ for _ in ()).throw(OSError(28, "No space")))
    context = _Context()
    with pytest.raises(_Aborted):
        servicer.Activate(apb.ActivateRequest(archive=data), context)
    assert context.code == code
    assert context.details
    assert manager.registry.active() is None
