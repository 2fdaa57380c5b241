"""What an installed order-policy needs: its version line, the default bundle, and an engine that loads."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import server
from server.engine import PY313_BUILD_FIX, Engine
from tests.support.bundles import ROOT

# The bundle the package ships (in a checkout: this directory); only its location and its own
# manifest and cases are used here, never its policy.
DEFAULT_BUNDLE = ROOT / "rules" / "cancellation"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_version_names_the_package_the_bundle_format_and_the_proto_package(tmp_path):
    """`--version` prints the package version, the manifest schema's format version and the proto package."""
    schema = json.loads((ROOT / "server" / "schemas" / "manifest.schema.json").read_text())
    proto = (ROOT / "protos" / "orderpolicy" / "v1" / "order_policy.proto").read_text()
    package = re.search(r"^package ([\w.]+);", proto, re.M).group(1)
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    want = (
        f"order-policy {server.__version__} (bundle format "
        f"{schema['properties']['format_version']['const']}, proto package {package})"
    )
    assert proc.stdout.strip() == want


def test_default_bundle_is_the_checkout_rules_when_nothing_is_packaged():
    """In a checkout (or an editable install) the default bundle is the repository's rules/cancellation."""
    assert server.default_bundle() == DEFAULT_BUNDLE


def test_a_packaged_default_bundle_wins_over_a_checkout(tmp_path, monkeypatch):
    """An installed wheel's embedded copy is used, even beside a rules/ directory."""
    package = tmp_path / "site" / "server"
    (package / "_bundle" / "cancellation").mkdir(parents=True)
    (package / "_bundle" / "cancellation" / "manifest.yaml").write_text("name: x\n")
    (tmp_path / "site" / "rules" / "cancellation").mkdir(parents=True)
    (tmp_path / "site" / "rules" / "cancellation" / "manifest.yaml").write_text("name: y\n")
    monkeypatch.setattr(server, "__file__", str(package / "__init__.py"))
    assert server.default_bundle() == package / "_bundle" / "cancellation"


def test_a_missing_default_bundle_names_the_packaged_path(tmp_path, monkeypatch):
    """With neither copy present the packaged path is returned, so the load error names it."""
    monkeypatch.setattr(server, "__file__", str(tmp_path / "server" / "__init__.py"))
    assert server.default_bundle() == tmp_path / "server" / "_bundle" / "cancellation"


def test_check_test_decide_and_matrix_default_to_the_default_bundle_from_any_directory(tmp_path):
    """Without a bundle argument the commands use the default bundle, wherever they run from."""
    name = yaml.safe_load((DEFAULT_BUNDLE / "manifest.yaml").read_text())["name"]
    check = run_cli("check", "--format", "json", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["bundle"]["name"] == name
    test = run_cli("test", cwd=tmp_path)
    assert test.returncode == 0, test.stdout[-2000:]
    order = tmp_path / "order.json"
    order.write_text(
        json.dumps(
            {
                "id": "o-1",
                "status": "received",
                "details": {"type": "testkit"},
                "lab_test": {"method": "testkit"},
                "events": [],
            }
        )
    )
    decide = run_cli("decide", "--order", str(order), "--format", "json", cwd=tmp_path)
    assert decide.returncode == 0, decide.stdout + decide.stderr
    assert json.loads(decide.stdout)["bundle"]["name"] == name
    table = run_cli("matrix", "--format", "json", "--now", "2026-03-10T12:00:00Z", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert json.loads(table.stdout)["bundle"]["name"] == name


def test_serve_help_names_the_shipped_default(tmp_path):
    """`serve --help` says what is served without --bundle."""
    proc = run_cli("serve", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert "the bundle shipped with the package" in " ".join(proc.stdout.split())


@pytest.mark.parametrize(
    ("error", "want"),
    [
        ("/x/durable_rules_engine.so: undefined symbol: PyEval_CallObject", PY313_BUILD_FIX),
        ("/x/durable_rules_engine.so: cannot open shared object file", "--force-reinstall"),
    ],
)
def test_an_engine_that_cannot_load_is_a_one_line_start_up_error(tmp_path, error, want):
    """A durable_rules build without the Python 3.13 fix stops every command with one line naming the fix."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "durable_rules_engine.py").write_text(f"raise ImportError({error!r})\n")
    env = {"PYTHONPATH": f"{fake}:{ROOT}", "PATH": "/usr/bin:/bin"}
    for args in (["serve"], ["check"], ["--version"]):
        proc = run_cli(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: the durable_rules engine cannot be loaded")
        assert want in lines[0]


def test_a_missing_engine_says_how_to_install_it(tmp_path):
    """Without durable_rules at all the message names the package to install."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "durable_rules_engine.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'durable_rules_engine'\", name='durable_rules_engine')\n"
    )
    proc = run_cli("check", cwd=tmp_path, env={"PYTHONPATH": f"{fake}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1
    assert "pip install durable-rules==2.0.28" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_c_engine_loads_and_decides_on_this_python():
    """The engine (built with the 3.13 fix where needed) imports and matches rules on the running interpreter."""
    engine = Engine("install_smoke", {"r": {"all": [{"m": {"a": "x"}}]}}, ["a"])
    try:
        assert engine.match({"a": "x"}) == ["r"]
        assert engine.match({"a": "y"}) == []
    finally:
        engine.close()


def test_the_adapter_never_registers_the_callbacks_the_313_fix_touches():
    """The shimmed PyEval_CallObject is reached only through the engine's store/queue callbacks; none is set."""
    tree = ast.parse((ROOT / "server" / "engine.py").read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "_dre"
    }
    assert used, "the adapter no longer calls durable_rules_engine as `_dre`: update this test"
    assert sorted(a for a in used if "callback" in a) == []
