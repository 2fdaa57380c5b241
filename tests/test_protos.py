"""The proto contract: generated code is fresh, `buf lint` (STANDARD) passes and nothing breaks
the released descriptors (`buf breaking` against `protos/released-image.json`)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

from server._gen.__main__ import generate

REPO = Path(__file__).resolve().parents[1]
GEN = REPO / "server" / "_gen"
PROTOS = REPO / "protos"
TOOLS = REPO / "tools" / "buf"
IMAGE = PROTOS / "released-image.json"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    """server/_gen matches what `python -m server._gen` makes from protos/ now."""
    written = generate(tmp_path)
    assert any(p.name.endswith("_pb2_grpc.py") for p in written)
    stale = [
        str(rel)
        for rel in written
        if not (GEN / rel).exists() or not filecmp.cmp(tmp_path / rel, GEN / rel, shallow=False)
    ]
    assert stale == [], "server/_gen is stale: run `make gen` (python -m server._gen)"


def test_generated_imports_point_into_server_gen(tmp_path: Path) -> None:
    """Generated modules import each other as server._gen.*, never as top-level packages."""
    generate(tmp_path)
    grpc_module = (tmp_path / "orderpolicy" / "v1" / "order_policy_pb2_grpc.py").read_text()
    assert "from server._gen.orderpolicy.v1 import order_policy_pb2" in grpc_module
    assert "\nfrom orderpolicy" not in grpc_module


def _buf() -> Path | None:
    """The buf CLI pinned by tools/buf/package-lock.json (`npm ci` there when missing)."""
    binary = TOOLS / "node_modules" / ".bin" / "buf"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        return None
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=TOOLS,
            check=True,
            capture_output=True,
            timeout=180,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return binary if binary.exists() else None


@pytest.fixture(scope="module")
def buf() -> Path:
    found = _buf()
    if found is None:
        pytest.skip("buf cannot be installed here (no npm or no registry access)")
    return found


def _run_buf(buf: Path, *args: str, cwd: Path = PROTOS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(buf), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_buf_lint_standard_passes(buf: Path) -> None:
    """`buf lint` with the STANDARD rules finds nothing in protos/."""
    result = _run_buf(buf, "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_protos_keep_the_released_contract(buf: Path) -> None:
    """`buf breaking` finds nothing in protos/ against the released image."""
    assert IMAGE.exists(), "no released image: run `make proto-image`"
    result = _run_buf(buf, "breaking", "--against", str(IMAGE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_catches_a_renumbered_field(buf: Path, tmp_path: Path) -> None:
    """A field renumbered in a copy of protos/ is reported against the released image."""
    copy = tmp_path / "protos"
    shutil.copytree(PROTOS, copy)
    proto = copy / "orderpolicy" / "v1" / "order_policy.proto"
    text = proto.read_text()
    assert "string request_id = 1;" in text
    proto.write_text(text.replace("string request_id = 1;", "string request_id = 99;", 1))
    result = _run_buf(buf, "breaking", "--against", str(IMAGE), cwd=copy)
    assert result.returncode != 0
    assert "request_id" in result.stdout + result.stderr


def test_every_element_of_the_contract_is_documented(tmp_path: Path) -> None:
    """Every service, RPC, message, field, oneof, enum and enum value has a comment above it
    (the comments are rendered into the generated code of the clients)."""
    from importlib import resources

    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    out = tmp_path / "set.binpb"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    assert (
        protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{resources.files('grpc_tools') / '_proto'}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ]
        )
        == 0
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    undocumented: list[str] = []
    for f in fds.file:
        comments = {tuple(loc.path): loc.leading_comments.strip() for loc in f.source_code_info.location}

        def need(
            path: tuple[int, ...],
            name: str,
            f: descriptor_pb2.FileDescriptorProto = f,
            comments: dict[tuple[int, ...], str] = comments,
        ) -> None:
            if not comments.get(path):
                undocumented.append(f"{f.name}: {name}")

        def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], prefix: str) -> None:
            need(path, prefix + m.name)
            for i, field in enumerate(m.field):
                need((*path, 2, i), f"{prefix}{m.name}.{field.name}")
            for i, oneof in enumerate(m.oneof_decl):
                need((*path, 8, i), f"{prefix}{m.name}.{oneof.name}")
            for i, nested in enumerate(m.nested_type):
                message(nested, (*path, 3, i), f"{prefix}{m.name}.")

        for i, m in enumerate(f.message_type):
            message(m, (4, i), "")
        for i, e in enumerate(f.enum_type):
            need((5, i), e.name)
            for j, value in enumerate(e.value):
                need((5, i, 2, j), f"{e.name}.{value.name}")
        for i, s in enumerate(f.service):
            need((6, i), s.name)
            for j, method in enumerate(s.method):
                need((6, i, 2, j), f"{s.name}.{method.name}")
    assert files
    assert undocumented == []
