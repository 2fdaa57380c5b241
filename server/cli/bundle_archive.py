"""``order-policy bundle build|sign|verify|keygen``: archives policy owners publish."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from server.bundle.archive import build_archive, generate_keypair, sign_archive, verify_archive
from server.cli import ExitCode, add_format, exit_code_for
from server.errors import ErrorList, PolicyError
from server.registry import build_decider


def add_parser(sub: Any) -> None:
    """Register ``bundle`` and its subcommands."""
    p = sub.add_parser("bundle", help="build, sign and verify bundle archives")
    bsub = p.add_subparsers(dest="bundle_command", required=True, metavar="SUBCOMMAND")
    b = bsub.add_parser("build", help="validate, test and archive a bundle directory")
    b.add_argument("dir", help="bundle directory")
    b.add_argument("-o", "--output", required=True, help="archive to write (.tar.gz)")
    add_format(b)
    b.set_defaults(func=run_build)
    s = bsub.add_parser("sign", help="add an Ed25519 signature to an archive")
    s.add_argument("file", help="archive (.tar.gz)")
    s.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    s.set_defaults(func=run_sign)
    v = bsub.add_parser("verify", help="check an archive's digests and signature")
    v.add_argument("file", help="archive (.tar.gz)")
    v.add_argument("--key", required=True, help="Ed25519 public key (PEM)")
    add_format(v)
    v.set_defaults(func=run_verify)
    k = bsub.add_parser("keygen", help="write a new Ed25519 key pair")
    k.add_argument("private", help="private key file to write")
    k.add_argument("public", help="public key file to write")
    k.set_defaults(func=run_keygen)


def run_build(args: argparse.Namespace) -> int:
    """Refuse an invalid or failing bundle; otherwise write the archive (exit 0)."""
    try:
        build_decider(args.dir, run_tests=True).close()
        manifest = build_archive(args.dir, args.output)
    except ErrorList as exc:
        for e in exc.errors:
            print(f"{str(e.location) or args.dir}: error[{e.code}]: {e.message}", file=sys.stderr)
        return exit_code_for(exc.errors)
    except PolicyError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return ExitCode.FAILURE
    if args.format == "json":
        print(json.dumps(manifest, indent=2, sort_keys=True))
    else:
        print(
            f"built {args.output}: {manifest['name']}@{manifest['revision']}, {len(manifest['files'])} files, "
            f"digest {manifest['digest'][:16]}"
        )
    return ExitCode.OK


def run_sign(args: argparse.Namespace) -> int:
    """Sign in place."""
    try:
        sign_archive(args.file, args.key)
    except PolicyError as exc:
        print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return exit_code_for([exc])
    print(f"signed {args.file}")
    return ExitCode.OK


def run_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the signature and every digest hold, 3 otherwise."""
    try:
        manifest = verify_archive(args.file, args.key)
    except PolicyError as exc:
        if args.format == "json":
            print(json.dumps({"valid": False, "error": {"code": exc.code, "message": exc.message}}))
        else:
            print(f"error[{exc.code}]: {exc.message}", file=sys.stderr)
        return exit_code_for([exc])
    if args.format == "json":
        print(
            json.dumps(
                {
                    "valid": True,
                    "name": manifest["name"],
                    "revision": manifest["revision"],
                    "digest": manifest["digest"],
                }
            )
        )
    else:
        print(f"ok: {args.file} is {manifest['name']}@{manifest['revision']}, signature and digests valid")
    return ExitCode.OK


def run_keygen(args: argparse.Namespace) -> int:
    """Write a key pair."""
    generate_keypair(args.private, args.public)
    print(f"wrote {args.private} (keep it secret) and {args.public}")
    return ExitCode.OK
