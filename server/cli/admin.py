"""``order-policy admin status|activate|rollback|shadow|hash-token``: the bundle admin API from a shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from server.cli import ExitCode, add_format


def add_parser(sub: Any) -> None:
    """Register ``admin`` and its subcommands."""
    p = sub.add_parser("admin", help="administer the bundles of a running server")
    asub = p.add_subparsers(dest="admin_command", required=True, metavar="SUBCOMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--address",
            default="127.0.0.1:50052",
            help="the server's admin listener, serve --admin-address (default 127.0.0.1:50052)",
        )
        q.add_argument(
            "--token-env",
            default="ORDER_POLICY_ADMIN_TOKEN",
            help="environment variable holding the admin bearer token",
        )
        q.add_argument("--tls-ca", type=Path, help="CA (PEM) of the server certificate")
        q.add_argument("--tls-cert", type=Path, help="admin client certificate (PEM, mTLS)")
        q.add_argument("--tls-key", type=Path, help="admin client key (PEM, mTLS)")
        q.add_argument("--timeout", type=float, default=60.0)
        add_format(q)

    s = asub.add_parser("status", help="active and loaded revisions, last error, per-worker revisions")
    common(s)
    s.set_defaults(func=run, call="GetStatus")
    a = asub.add_parser("activate", help="upload and activate a bundle archive")
    a.add_argument("archive", type=Path)
    common(a)
    a.set_defaults(func=run, call="Activate")
    r = asub.add_parser("rollback", help="make a loaded revision active again")
    r.add_argument("revision")
    common(r)
    r.set_defaults(func=run, call="Rollback")
    sh = asub.add_parser("shadow", help="set (with an archive) or clear (--clear) the shadow candidate")
    sh.add_argument("archive", type=Path, nargs="?")
    sh.add_argument("--clear", action="store_true")
    common(sh)
    sh.set_defaults(func=run, call="Shadow")
    h = asub.add_parser("hash-token", help="print the token-file line for a token read from stdin")
    h.set_defaults(func=run_hash)


def run_hash(args: argparse.Namespace) -> int:
    """Read a token on stdin, print its hashed line."""
    from server.api.admin import hash_token

    token = sys.stdin.readline().strip()
    if not token:
        print("error: no token on stdin", file=sys.stderr)
        return ExitCode.FAILURE
    print(hash_token(token))
    return ExitCode.OK


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.tls_ca or args.tls_cert:
        creds = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes() if args.tls_ca else None,
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
        return grpc.secure_channel(args.address, creds)
    return grpc.insecure_channel(args.address)


def run(args: argparse.Namespace) -> int:
    """Call the admin API; print the answer; non-zero on any error."""
    import grpc
    from google.protobuf import json_format

    from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
    from server._gen.orderpolicy.v1 import bundle_admin_pb2_grpc as apb_grpc

    token = os.environ.get(args.token_env, "")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with _channel(args) as channel:
        stub = apb_grpc.BundleAdminServiceStub(channel)
        try:
            if args.call == "GetStatus":
                reply = stub.GetStatus(apb.GetStatusRequest(), metadata=metadata, timeout=args.timeout)
            elif args.call == "Activate":
                reply = stub.Activate(
                    apb.ActivateRequest(archive=args.archive.read_bytes()), metadata=metadata, timeout=args.timeout
                )
            elif args.call == "Rollback":
                reply = stub.Rollback(
                    apb.RollbackRequest(revision=args.revision), metadata=metadata, timeout=args.timeout
                )
            elif args.clear:
                reply = stub.ClearShadow(apb.ClearShadowRequest(), metadata=metadata, timeout=args.timeout)
            elif args.archive is not None:
                reply = stub.SetShadow(
                    apb.SetShadowRequest(archive=args.archive.read_bytes()), metadata=metadata, timeout=args.timeout
                )
            else:
                print("error: give an archive or --clear", file=sys.stderr)
                return ExitCode.FAILURE
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return ExitCode.FAILURE
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return ExitCode.FAILURE
    doc = json_format.MessageToDict(reply, preserving_proto_field_name=True)
    if args.format == "json":
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(_human(args.call, doc))
    return ExitCode.OK


def _human(call: str, doc: dict[str, Any]) -> str:
    if call != "GetStatus":
        rev = doc.get("revision", {})
        return f"ok: {rev.get('name', '')}@{rev.get('revision', '')}" if rev else "ok"
    active = doc.get("active", {})
    lines = [f"active: {active.get('name', '-')}@{active.get('revision', '-')} ({active.get('digest', '')[:16]})"]
    lines.append("loaded: " + ", ".join(r.get("revision", "") for r in doc.get("loaded", [])))
    if doc.get("shadow", {}).get("revision"):
        lines.append(f"shadow: {doc['shadow']['revision']}")
    for w in doc.get("workers", []):
        lines.append(f"worker {w.get('pid')}: {w.get('revision')}")
    if doc.get("last_error"):
        lines.append(f"last error: {doc['last_error']}")
    return "\n".join(lines)
