"""``orderpolicy.v1.BundleAdminService``: status, activation, rollback and shadow, behind credentials.

Every call needs an admin credential:

* a bearer token (``authorization: Bearer <token>`` metadata) whose sha256 is
  listed in the admin token file (one ``sha256:<hex>`` per line, ``#`` comments;
  ``order-policy admin hash-token`` prints a line), or
* an mTLS client certificate whose common name is one of the allowed admin names.

No credential: UNAUTHENTICATED. A credential that is not an admin's (a wrong
token, or a decision caller's certificate): PERMISSION_DENIED. Tokens are
compared by hash in constant time and never logged. A bearer token is refused
(UNAUTHENTICATED) on a connection that is neither TLS nor loopback, so a
listener opened to the network without TLS never accepts a token sniffed off it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import grpc
from google.protobuf import timestamp_pb2

from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
from server._gen.orderpolicy.v1 import bundle_admin_pb2_grpc as apb_grpc
from server.decide import Decider
from server.errors import ErrorList, NoBundleError
from server.lifecycle import BundleManager

__all__ = ["AdminAuth", "BundleAdminServicer", "hash_token", "is_loopback_peer", "read_token_hashes"]


def hash_token(token: str) -> str:
    """The line to put in the admin token file for ``token``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def read_token_hashes(path: str | Path) -> list[str]:
    """Hashed tokens from a token file (blank lines and ``#`` comments ignored)."""
    hashes = []
    for line in Path(path).read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:  # `sha256:<hex>`, optionally followed by a name
            entry = fields[0]
            if not entry.startswith("sha256:") or len(entry) != 71:
                raise ValueError(f"admin token file `{path}`: expected `sha256:<64 hex>` lines")
            hashes.append(entry)
    return hashes


class AdminAuth:
    """Decides whether a call carries an admin credential."""

    def __init__(self, token_hashes: Iterable[str] = (), client_names: Iterable[str] = ()) -> None:
        self._hashes = [h.encode() for h in token_hashes]
        self._names = {n.encode() for n in client_names}

    def check(self, context: grpc.ServicerContext) -> None:
        """Abort with UNAUTHENTICATED or PERMISSION_DENIED unless the caller is an admin."""
        presented = False
        for key, value in context.invocation_metadata():
            if key == "authorization":
                presented = True
                if not _private_channel(context):
                    context.abort(
                        grpc.StatusCode.UNAUTHENTICATED,
                        "bearer tokens are accepted only over TLS or from loopback: serve the admin "
                        "API with --tls-cert/--tls-key or call it on this host",
                    )
                scheme, _, token = str(value).partition(" ")
                if scheme.lower() == "bearer" and token:
                    digest = hash_token(token.strip()).encode()
                    if any(hmac.compare_digest(digest, h) for h in self._hashes):
                        return
        # grpc's stubs type the values as bytes; each is a list of bytes.
        names = cast("list[bytes]", context.auth_context().get("x509_common_name", []))
        if names:
            presented = True
            if any(n in self._names for n in names):
                return
        if not presented:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "admin calls need a bearer token or an admin client certificate"
            )
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "this credential may not administer bundles")


def _private_channel(context: grpc.ServicerContext) -> bool:
    """Is the call's connection TLS, or from this host (loopback or a Unix socket)?"""
    if b"ssl" in (context.auth_context().get("transport_security_type") or ()):
        return True
    return is_loopback_peer(context.peer())


def is_loopback_peer(peer: str) -> bool:
    """Does a gRPC peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:...``) name this host?"""
    kind, _, rest = peer.partition(":")
    if kind in ("unix", "unix-abstract"):
        return True
    if kind not in ("ipv4", "ipv6"):
        return False
    host = rest.rpartition(":")[0].strip("[]").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _ts(text: str) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if text:
        ts.FromDatetime(dt.datetime.fromisoformat(text))
    return ts


def _info(d: Decider | None, active: Decider | None) -> apb.RevisionInfo:
    if d is None:
        return apb.RevisionInfo()
    return apb.RevisionInfo(
        name=d.ref.name,
        revision=d.ref.revision,
        digest=d.ref.digest,
        active=active is not None and d.ref.digest == active.ref.digest,
    )


class BundleAdminServicer(apb_grpc.BundleAdminServiceServicer):
    """The admin API over a :class:`BundleManager`."""

    def __init__(
        self, manager: BundleManager, auth: AdminAuth, on_event: Callable[[str, dict[str, Any]], None] | None = None
    ) -> None:
        self._manager = manager
        self._auth = auth
        self._on_event = on_event or (lambda event, fields: None)

    def _loaded(self) -> list[Decider]:
        reg = self._manager.registry
        out = []
        for rev in reg.revisions():
            try:
                out.append(reg.get(rev))
            except NoBundleError:
                continue
        return out

    def GetStatus(self, request: apb.GetStatusRequest, context: grpc.ServicerContext) -> apb.GetStatusResponse:
        self._auth.check(context)
        active = self._manager.registry.active()
        status = self._manager.status
        return apb.GetStatusResponse(
            active=_info(active, active),
            loaded=[_info(d, active) for d in self._loaded()],
            last_error=status.last_error,
            last_error_at=_ts(status.last_error_at),
            source=status.source,
            workers=self._workers(),
            shadow=_info(self._manager.shadow, active),
            loads=status.loads,
            failures=status.failures,
        )

    def _workers(self) -> list[apb.WorkerStatus]:
        state = self._manager.state
        if state is None:
            active = self._manager.registry.active()
            if active is None:
                return []
            return [
                apb.WorkerStatus(
                    pid=os.getpid(),
                    revision=active.ref.revision,
                    digest=active.ref.digest,
                    reported_at=_ts(dt.datetime.now(dt.UTC).isoformat()),
                )
            ]
        out = []
        for path in sorted((state.path / "workers").glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                os.kill(int(rec["pid"]), 0)  # a worker that is gone is not listed
            except (OSError, ValueError, KeyError):
                continue
            out.append(
                apb.WorkerStatus(
                    pid=int(rec["pid"]), revision=rec["revision"], digest=rec["digest"], reported_at=_ts(rec["at"])
                )
            )
        return out

    def ListRevisions(
        self, request: apb.ListRevisionsRequest, context: grpc.ServicerContext
    ) -> apb.ListRevisionsResponse:
        self._auth.check(context)
        active = self._manager.registry.active()
        return apb.ListRevisionsResponse(revisions=[_info(d, active) for d in self._loaded()])

    def Activate(self, request: apb.ActivateRequest, context: grpc.ServicerContext) -> apb.ActivateResponse:
        self._auth.check(context)
        try:
            decider = self._manager.activate_archive(request.archive, origin="admin upload")
        except ErrorList as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, _refusal(exc))
        self._on_event("admin_activate", {"revision": decider.ref.revision})
        return apb.ActivateResponse(revision=_info(decider, decider))

    def Rollback(self, request: apb.RollbackRequest, context: grpc.ServicerContext) -> apb.RollbackResponse:
        self._auth.check(context)
        try:
            decider = self._manager.rollback(request.revision)
        except NoBundleError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        self._on_event("admin_rollback", {"revision": decider.ref.revision})
        return apb.RollbackResponse(revision=_info(decider, decider))

    def SetShadow(self, request: apb.SetShadowRequest, context: grpc.ServicerContext) -> apb.SetShadowResponse:
        self._auth.check(context)
        try:
            decider = self._manager.set_shadow_archive(request.archive)
        except ErrorList as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, _refusal(exc))
        return apb.SetShadowResponse(revision=_info(decider, self._manager.registry.active()))

    def ClearShadow(self, request: apb.ClearShadowRequest, context: grpc.ServicerContext) -> apb.ClearShadowResponse:
        self._auth.check(context)
        self._manager.clear_shadow()
        return apb.ClearShadowResponse()


def _refusal(exc: ErrorList) -> str:
    first = exc.errors[0] if exc.errors else exc
    more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
    return f"bundle refused: {first}{more}"[:1000]
