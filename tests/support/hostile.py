"""Hostile bundle archives, built at test time, and a bounded run of each against a manager.

``python -m tests.support.hostile ATTACK [--keyed]`` activates one attack archive against a
manager that already serves a good revision, in a fresh process, and prints one JSON
line: seconds taken, peak RSS growth (KiB), the refusal code, and the revision still
serving. The regression tests run it in a subprocess so a regression cannot take the
test process (or the machine) with it.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

ALIAS_BOMB = (
    "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [
            f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + chr(ord('a') + i - 1)] * 9)}]"
            for i in range(1, 9)
        ]
    )
    + "\n"
)


def _gz(data: bytes) -> bytes:
    """One gzip member (several concatenated are one gzip stream)."""
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mode = size, kind, 0o644
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pad(size: int) -> bytes:
    return bytes(-size % 512)


def _manifest_member(files: dict[str, str]) -> bytes:
    body = json.dumps(
        {"format_version": 1, "name": "x", "revision": "evil", "files": files, "digest": "0" * 64}
    ).encode()
    return _header(".manifest.json", len(body)) + body + _pad(len(body))


def zero_members(count: int = 999, size: int = 2 * MiB) -> bytes:
    """``count`` members of ``size`` zero bytes (each zero run compressed once, repeated)."""
    zeros = _gz(bytes(size) + _pad(size))
    parts = [_gz(_manifest_member({}))]
    for i in range(count):
        parts += [_gz(_header(f"data/z{i:04d}.bin", size)), zeros]
    return b"".join(parts) + _gz(bytes(1024))


def long_name(size: int = 400 * MiB) -> bytes:
    """A GNU long-name header of ``size`` bytes (made of one compressed MiB repeated)."""
    chunk = _gz(b"a" * MiB)
    parts = [_gz(_manifest_member({})), _gz(_header("././@LongLink", size, tarfile.GNUTYPE_LONGNAME))]
    parts += [chunk] * (size // MiB)
    return b"".join(parts) + _gz(_header("data/x.yaml", 0) + bytes(1024))


def directories(count: int = 300_000) -> bytes:
    """``count`` directory entries."""
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [c.compress(_manifest_member({}))]
    template = bytearray(_header("d000000/", 0, tarfile.DIRTYPE))
    for i in range(count):
        header = bytearray(template)
        header[1:7] = b"%06d" % i
        header[148:156] = b" " * 8
        header[148:155] = b"%06o\0" % sum(header)
        parts.append(c.compress(bytes(header)))
    parts.append(c.compress(bytes(1024)))
    parts.append(c.flush())
    return b"".join(parts)


def yaml_member(text: str, name: str = "policies/cancel_order.yaml") -> bytes:
    """An archive whose manifest lists one YAML file (digest unchecked: the parse is the attack)."""
    body = text.encode()
    buf = io.BytesIO()
    buf.write(_manifest_member({name: "sha256:" + "0" * 64}))
    buf.write(_header(name, len(body)) + body + _pad(len(body)))
    buf.write(bytes(1024))
    return _gz(buf.getvalue())


def big_yaml(size: int = 1_900_000) -> str:
    """A ~``size`` byte YAML document of small scalars (the parse, not the bytes, is the cost)."""
    return "rules: [" + ",".join(["1"] * (size // 2)) + "]\n"


ATTACKS = {
    "alias_bomb": lambda: yaml_member(ALIAS_BOMB),
    "zero_members": zero_members,
    "long_name": long_name,
    "directories": directories,
    "big_yaml": lambda: yaml_member(big_yaml()),
    "many_nodes": lambda: yaml_member(big_yaml(900_000)),
}


def _peak_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:  # Linux: resets VmHWM
        f.write("5")


def _rss_kib() -> int:
    from tests.support.memory import rss_kib

    return rss_kib()


def run(attacks: list[str], keyed: bool) -> list[dict[str, object]]:
    """Serve a good revision, activate each attack archive, report cost and outcome."""
    from server.bundle.archive import build_archive, generate_keypair, sign_archive
    from server.lifecycle import BundleManager
    from server.registry import Registry
    from tests.support.bundles import FIXTURE_BUNDLE

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        key = None
        good = t / "good.tar.gz"
        build_archive(FIXTURE_BUNDLE, good)
        if keyed:
            generate_keypair(t / "k", t / "k.pub")
            sign_archive(good, t / "k")
            key = t / "k.pub"
        manager = BundleManager(Registry(), verification_key=key)
        manager.activate_archive(good.read_bytes(), origin="good")
        return [_one(manager, attack, keyed) for attack in attacks]


def _one(manager: Any, attack: str, keyed: bool) -> dict[str, object]:
    from server.errors import ErrorList
    from server.model import Snapshot
    from tests.test_lifecycle import APPT, NOW, ORDER

    data = ATTACKS[attack]()
    good_revision = manager.registry.active().ref.revision
    before = _rss_kib()
    _reset_peak()
    start = time.perf_counter()
    code = ""
    try:
        manager.activate_archive(data, origin=attack)
    except ErrorList as exc:
        code = exc.errors[0].code if exc.errors else "?"
    seconds = time.perf_counter() - start
    growth = max(0, _peak_kib() - before)
    decision = manager.registry.decide(Snapshot("cancel_order", ORDER, APPT, NOW))
    return {
        "attack": attack,
        "keyed": keyed,
        "seconds": round(seconds, 3),
        "rss_growth_kib": growth,
        "code": code,
        "serving": manager.registry.active().ref.revision,
        "good_revision": good_revision,
        "decided": bool(decision.outcome),
        "compressed_bytes": len(data),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("attacks", nargs="+", choices=sorted(ATTACKS))
    parser.add_argument("--keyed", action="store_true", help="the manager has a verification key")
    parser.add_argument("--memory-cap-mib", type=int, default=1536, help="address-space cap of this process")
    args = parser.parse_args(argv)
    cap = args.memory_cap_mib * MiB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for result in run(args.attacks, args.keyed):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
