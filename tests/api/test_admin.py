"""Swappable bundles through the real server: hot swap under load, pinning, admin API, shadow, workers."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
from server._gen.orderpolicy.v1 import bundle_admin_pb2_grpc as apb_grpc
from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
from server.api.admin import hash_token
from server.app import Server, ServerOptions
from server.bundle.archive import build_archive
from server.decisionlog import DecisionLog
from server.lifecycle import BundleManager, StateDir
from server.registry import Registry
from tests.support.bundles import bundle_variant, set_value
from tests.support.pki import Pki
from tests.support.servers import serve_process
from tests.support.snapshots import PHLEBOTOMY_APPOINTMENT, PHLEBOTOMY_ORDER

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token"
ORDER = PHLEBOTOMY_ORDER
APPT = PHLEBOTOMY_APPOINTMENT


def request(**kw) -> pb.DecideRequest:
    req = pb.DecideRequest(
        action=pb.ACTION_CANCEL_ORDER, order_json=json.dumps(ORDER), appointment_json=json.dumps(APPT), **kw
    )
    req.now.FromJsonString("2026-03-10T12:00:00Z")  # 32 h notice
    return req


EXPECTED = {"r24": "FULL_REFUND", "r48": "NON_REFUNDABLE"}  # what each revision answers


def revision(tmp: Path, name: str, refund: str) -> Path:
    dest = bundle_variant(tmp / name, revision=name)
    set_value(dest / "data/settings.yaml", ["params", "refund_window"], refund)
    if refund != "24h":
        (dest / "tests/refunds.yaml").unlink()  # those cases pin the 24 h window
    return dest


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("revisions")
    out = {}
    for name, refund in (("r24", "24h"), ("r48", "48h")):
        path = tmp / f"{name}.tar.gz"
        build_archive(revision(tmp, name, refund), path)
        out[name] = path.read_bytes()
    out["truncated"] = out["r24"][: len(out["r24"]) // 2]
    return out


class _Env:
    def __init__(self, tmp: Path, archives: dict[str, bytes], **opts) -> None:
        self.registry = Registry(keep=3)
        self.manager = BundleManager(self.registry, state=StateDir(tmp / "state"))
        self.manager.activate_archive(archives["r24"], origin="test")
        self.manager.mark_serving()
        token_file = tmp / "tokens"
        token_file.write_text(f"# admins\n{hash_token(TOKEN)}  ops\n")
        self.dlog = DecisionLog(str(tmp / "decisions.log"))
        opts = {"admin_address": "127.0.0.1:0", **opts}
        options = ServerOptions(host="127.0.0.1", port=0, workers=1, admin_token_file=token_file, **opts)
        self.server = Server(self.registry, options, manager=self.manager, decision_log=self.dlog)
        self.server.start()
        self.address = self.server.address
        self.admin_address = self.server.admin_address

    def close(self) -> None:
        self.server.stop(0).wait(10)
        self.manager.stop()
        self.dlog.close()


@pytest.fixture
def env(tmp_path: Path, archives: dict[str, bytes]):
    e = _Env(tmp_path, archives)
    yield e
    e.close()


def admin(address: str) -> apb_grpc.BundleAdminServiceStub:
    return apb_grpc.BundleAdminServiceStub(grpc.insecure_channel(address))


AUTH = [("authorization", f"Bearer {TOKEN}")]


def follow_up(response: pb.DecideResponse) -> str:
    codes = {f.code for f in response.decision.follow_ups}
    return "FULL_REFUND" if "FULL_REFUND" in codes else "NON_REFUNDABLE"


@pytest.mark.slow
def test_twenty_swaps_under_load_fail_no_call_and_never_mix_revisions(env: _Env, archives) -> None:
    """4 clients call continuously while r24/r48 swap 20 times: 0 failures, each answer is its revision's."""
    stop = threading.Event()
    failures: list[str] = []
    seen: Counter[str] = Counter()

    def client() -> None:
        with grpc.insecure_channel(env.address) as channel:
            stub = pb_grpc.OrderPolicyServiceStub(channel)
            while not stop.is_set():
                try:
                    reply = stub.Decide(request(), timeout=10)
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code()}: {exc.details()}")
                    continue
                rev = reply.decision.bundle.revision
                seen[rev] += 1
                if EXPECTED.get(rev) != follow_up(reply):
                    failures.append(f"revision {rev} answered {follow_up(reply)}")

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            env.manager.activate_archive(archives["r48" if i % 2 == 0 else "r24"], origin="test")
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert seen["r24"] > 0
    assert seen["r48"] > 0
    assert env.registry.active().ref.revision == "r24"


def test_a_pinned_revision_decides_and_an_unknown_one_is_failed_precondition(env: _Env, archives) -> None:
    """`bundle_revision` picks a loaded revision; one that is not loaded answers FAILED_PRECONDITION."""
    env.manager.activate_archive(archives["r48"], origin="test")
    with grpc.insecure_channel(env.address) as channel:
        stub = pb_grpc.OrderPolicyServiceStub(channel)
        assert follow_up(stub.Decide(request(), timeout=10)) == "NON_REFUNDABLE"
        pinned = stub.Decide(request(bundle_revision="r24"), timeout=10)
        assert (pinned.decision.bundle.revision, follow_up(pinned)) == ("r24", "FULL_REFUND")
        with pytest.raises(grpc.RpcError) as info:
            stub.Decide(request(bundle_revision="r0"), timeout=10)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_admin_calls_need_a_credential(env: _Env) -> None:
    """No token: UNAUTHENTICATED; a wrong token: PERMISSION_DENIED; the right one: the status."""
    stub = admin(env.admin_address)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetStatus(apb.GetStatusRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for bad in ("Bearer wrong", "Basic " + TOKEN, "Bearer"):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetStatus(apb.GetStatusRequest(), metadata=[("authorization", bad)], timeout=10)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, bad
    status = stub.GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
    assert status.active.revision == "r24"
    assert [w.revision for w in status.workers] == ["r24"]


def test_admin_activate_refuses_a_broken_archive_and_rolls_back(env: _Env, archives) -> None:
    """Upload r48 (active), a truncated archive (FAILED_PRECONDITION, r48 still serves), roll back to r24."""
    stub = admin(env.admin_address)
    assert (
        stub.Activate(apb.ActivateRequest(archive=archives["r48"]), metadata=AUTH, timeout=60).revision.revision
        == "r48"
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.Activate(apb.ActivateRequest(archive=archives["truncated"]), metadata=AUTH, timeout=60)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = stub.GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
    assert status.active.revision == "r48"
    assert "not a readable bundle archive" in status.last_error
    assert status.failures == 1
    assert [
        r.revision for r in stub.ListRevisions(apb.ListRevisionsRequest(), metadata=AUTH, timeout=10).revisions
    ] == ["r24", "r48"]
    assert stub.Rollback(apb.RollbackRequest(revision="r24"), metadata=AUTH, timeout=10).revision.revision == "r24"
    with pytest.raises(grpc.RpcError) as info:
        stub.Rollback(apb.RollbackRequest(revision="nope"), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with grpc.insecure_channel(env.address) as channel:
        assert follow_up(pb_grpc.OrderPolicyServiceStub(channel).Decide(request(), timeout=10)) == "FULL_REFUND"


def test_shadow_differences_are_counted_and_logged_while_answers_stay_active(env: _Env, archives, tmp_path) -> None:
    """With r48 in shadow, answers stay r24's; each difference is counted and logged with both decisions."""
    from server.api.metrics import METRICS

    def differing() -> float:
        return METRICS.shadow_decisions.labels("true")._value.get()

    before = differing()
    stub = admin(env.admin_address)
    assert (
        stub.SetShadow(apb.SetShadowRequest(archive=archives["r48"]), metadata=AUTH, timeout=60).revision.revision
        == "r48"
    )
    with grpc.insecure_channel(env.address) as channel:
        for _ in range(5):
            reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(request(), timeout=10)
            assert (reply.decision.bundle.revision, follow_up(reply)) == ("r24", "FULL_REFUND")
    assert differing() - before == 5
    stub.ClearShadow(apb.ClearShadowRequest(), metadata=AUTH, timeout=10)
    env.dlog.close()
    entries = [json.loads(line) for line in (tmp_path / "decisions.log").read_text().splitlines()]
    shadowed = [e for e in entries if "shadow" in e]
    assert len(shadowed) == 5
    assert all(e["shadow_differs"] and e["shadow"]["bundle"]["revision"] == "r48" for e in shadowed)
    assert all("NON_REFUNDABLE" in e["shadow"]["follow_ups"] and "FULL_REFUND" in e["follow_ups"] for e in shadowed)
    env.dlog = DecisionLog(str(tmp_path / "after.log"))  # the fixture closes it again


def test_admin_mtls_names_decide_who_may_administer(tmp_path: Path, archives) -> None:
    """Over mTLS a decision caller's certificate gets PERMISSION_DENIED; an allowed name gets the status."""
    pki = Pki(tmp_path)
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(), pki.client_cert.read_bytes())
    for allowed, expected in (((), grpc.StatusCode.PERMISSION_DENIED), (("client.test",), None)):
        e = _Env(
            tmp_path / f"env{len(allowed)}",
            archives,
            tls_cert=pki.server_cert,
            tls_key=pki.server_key,
            tls_client_ca=pki.ca,
            admin_client_names=allowed,
        )
        try:
            with (
                grpc.secure_channel(e.admin_address, creds) as admin_channel,
                grpc.secure_channel(e.address, creds) as channel,
            ):
                stub = apb_grpc.BundleAdminServiceStub(admin_channel)
                if expected is None:
                    assert stub.GetStatus(apb.GetStatusRequest(), timeout=10).active.revision == "r24"
                else:
                    with pytest.raises(grpc.RpcError) as info:
                        stub.GetStatus(apb.GetStatusRequest(), timeout=10)
                    assert info.value.code() == expected
                    # The same certificate still gets decisions.
                    reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(request(), timeout=10)
                    assert reply.decision.outcome == pb.OUTCOME_ALLOW
        finally:
            e.close()


@pytest.mark.slow
def test_two_workers_end_on_the_uploaded_revision(tmp_path: Path, archives) -> None:
    """`serve --workers 2`: an upload to whichever worker answers reaches both; new connections all see it."""
    r24 = tmp_path / "r24.tar.gz"
    r24.write_bytes(archives["r24"])
    token_file = tmp_path / "tokens"
    token_file.write_text(hash_token(TOKEN) + "\n")
    with serve_process(
        r24, "--state-dir", str(tmp_path / "state"), "--admin-token-file", str(token_file), workers=2
    ) as proc:
        stub = admin(proc.admin_address)
        stub.Activate(apb.ActivateRequest(archive=archives["r48"]), metadata=AUTH, timeout=60)
        deadline = time.monotonic() + 60
        workers: list[str] = []
        while time.monotonic() < deadline:
            status = stub.GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
            workers = [w.revision for w in status.workers]
            if len(workers) == 2 and set(workers) == {"r48"}:
                break
            time.sleep(0.2)
        assert workers == ["r48", "r48"], proc.log()
        revisions = set()
        for _ in range(16):  # fresh connections spread over both workers
            with grpc.insecure_channel(proc.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(request(), timeout=10)
                revisions.add((reply.decision.bundle.revision, follow_up(reply)))
        assert revisions == {("r48", "NON_REFUNDABLE")}
        assert proc.terminate() == 0


@pytest.mark.slow
def test_restart_serves_the_last_good_revision_when_the_source_is_gone(tmp_path: Path, archives) -> None:
    """Serve an archive with a state dir, delete the archive, restart: the last good revision serves."""
    source = tmp_path / "bundle.tar.gz"
    source.write_bytes(archives["r48"])
    state = tmp_path / "state"
    with serve_process(source, "--state-dir", str(state)) as proc:
        assert proc.terminate() == 0
    source.unlink()
    with serve_process(source, "--state-dir", str(state)) as proc:
        with grpc.insecure_channel(proc.address) as channel:
            reply = pb_grpc.OrderPolicyServiceStub(channel).Decide(request(), timeout=10)
        assert (reply.decision.bundle.revision, follow_up(reply)) == ("r48", "NON_REFUNDABLE")
        assert proc.terminate() == 0


@pytest.mark.slow
def test_admin_command_line_wraps_the_api(tmp_path: Path, archives) -> None:
    """`order-policy admin status|activate|rollback|shadow` against a running server, with the token."""
    import os
    import subprocess

    from tests.support.servers import serve_command

    r24, r48 = tmp_path / "r24.tar.gz", tmp_path / "r48.tar.gz"
    r24.write_bytes(archives["r24"])
    r48.write_bytes(archives["r48"])
    token_file = tmp_path / "tokens"
    hashed = subprocess.run(
        serve_command("admin", "hash-token"), input=TOKEN + "\n", capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.strip()
    assert hashed == hash_token(TOKEN)
    token_file.write_text(hashed + "\n")
    with serve_process(r24, "--admin-token-file", str(token_file)) as proc:

        def admin_cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            env.pop("ORDER_POLICY_ADMIN_TOKEN", None)
            if token is not None:
                env["ORDER_POLICY_ADMIN_TOKEN"] = token
            return subprocess.run(
                serve_command("admin", *args, "--address", proc.admin_address),
                capture_output=True,
                text=True,
                cwd=REPO,
                env=env,
                timeout=120,
            )

        denied = admin_cli("status", token=None)
        assert denied.returncode == 1
        assert "UNAUTHENTICATED" in denied.stderr
        assert "PERMISSION_DENIED" in admin_cli("status", token="wrong").stderr
        assert admin_cli("activate", str(r48)).stdout.strip() == "ok: cancellation_fixture@r48"
        status = json.loads(admin_cli("status", "--format", "json").stdout)
        assert status["active"]["revision"] == "r48"
        assert [r["revision"] for r in status["loaded"]] == ["r24", "r48"]
        assert admin_cli("shadow", str(r24)).returncode == 0
        assert json.loads(admin_cli("status", "--format", "json").stdout)["shadow"]["revision"] == "r24"
        assert admin_cli("shadow", "--clear").returncode == 0
        assert admin_cli("rollback", "r24").stdout.strip() == "ok: cancellation_fixture@r24"
        human = admin_cli("status").stdout
        assert human.startswith("active: cancellation_fixture@r24")
        assert "loaded: r48, r24" in human
        assert proc.terminate() == 0


def test_serve_writes_every_decision_to_the_decision_log(tmp_path: Path, archives) -> None:
    """`serve --decision-log F --workers 2`: one line per decision across the workers' files, no patient data."""
    source = tmp_path / "bundle.tar.gz"
    source.write_bytes(archives["r24"])
    target = tmp_path / "decisions.log"
    order = dict(ORDER, patient_details={"first_name": "Ada", "email": "ada@example.com"})
    with serve_process(source, "--decision-log", str(target), workers=2) as proc:
        ids = set()
        for _ in range(20):  # fresh connections spread over both workers
            with grpc.insecure_channel(proc.address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                req = request()
                req.order_json = json.dumps(order)
                ids.add(pb_grpc.OrderPolicyServiceStub(channel).Decide(req, timeout=10).decision.decision_id)
        assert proc.terminate() == 0  # a clean stop flushes every queued entry
    lines = [line for f in sorted(tmp_path.glob("decisions.log*")) for line in f.read_text().splitlines()]
    entries = [json.loads(line) for line in lines]
    assert {e["decision_id"] for e in entries} == ids
    assert len(entries) == 20
    assert all(e["bundle"]["revision"] == "r24" and e["order_id"] == "o-1" for e in entries)
    assert "Ada" not in "".join(lines)
    assert "example.com" not in "".join(lines)


def _services(address: str) -> set[str]:
    """The services the server at ``address`` advertises through reflection."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        return {s.name for reply in replies for s in reply.list_services_response.service}


def test_the_public_port_neither_serves_nor_advertises_admin(env: _Env) -> None:
    """On the decision port the admin API is UNIMPLEMENTED (even with a valid token) and reflection
    lists only decisions, health and reflection; the admin listener serves and advertises it."""
    with pytest.raises(grpc.RpcError) as info:
        admin(env.address).GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    public = _services(env.address)
    assert "orderpolicy.v1.OrderPolicyService" in public
    assert not any("Admin" in name for name in public)
    assert "orderpolicy.v1.BundleAdminService" in _services(env.admin_address)
    assert env.admin_address != env.address
    assert admin(env.admin_address).GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10).active.revision


class _Context:
    """A servicer context seen from a given peer and transport (for AdminAuth alone)."""

    def __init__(self, peer: str, tls: bool, token: str = TOKEN) -> None:
        self._peer, self._tls, self._token = peer, tls, token

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self._token}")]

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"ssl" if self._tls else b"insecure"]}

    def peer(self) -> str:
        return self._peer

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise PermissionError(code, details)


@pytest.mark.parametrize(
    ("peer", "tls", "allowed"),
    [
        ("ipv4:127.0.0.1:5000", False, True),
        ("ipv6:[::1]:5000", False, True),
        ("ipv6:[::ffff:127.0.0.1]:5000", False, True),
        ("unix:/run/order-policy.sock", False, True),
        ("ipv4:10.1.2.3:5000", False, False),
        ("ipv6:[fd00::2]:5000", False, False),
        ("ipv4:10.1.2.3:5000", True, True),
    ],
)
def test_a_bearer_token_needs_tls_or_loopback(peer: str, tls: bool, allowed: bool) -> None:
    """A right token is accepted over TLS or from loopback, and refused UNAUTHENTICATED in cleartext
    from another host, before it is even compared."""
    from server.api.admin import AdminAuth

    auth = AdminAuth([hash_token(TOKEN)])
    if allowed:
        auth.check(_Context(peer, tls))
        return
    for token in (TOKEN, "wrong"):
        with pytest.raises(PermissionError) as info:
            auth.check(_Context(peer, tls, token))
        code, details = info.value.args
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert details.startswith("bearer tokens are accepted only over TLS or from loopback")


def _outside_address() -> str | None:
    """A local non-loopback IPv4 address a test can connect to, if the machine has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a source address
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_cleartext_admin_listener_open_to_the_network_refuses_tokens(tmp_path: Path, archives) -> None:
    """Admin on all interfaces without TLS: a call from a non-loopback address with the right
    token is UNAUTHENTICATED; the same call from loopback succeeds."""
    outside = _outside_address()
    if outside is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    e = _Env(tmp_path, archives, admin_address="0.0.0.0:0")
    try:
        with pytest.raises(grpc.RpcError) as info:
            admin(f"{outside}:{e.server.admin_port}").GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "only over TLS or from loopback" in info.value.details()
        status = admin(f"127.0.0.1:{e.server.admin_port}").GetStatus(apb.GetStatusRequest(), metadata=AUTH, timeout=10)
        assert status.active.revision == "r24"
    finally:
        e.close()
