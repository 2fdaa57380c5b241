"""The Kubernetes manifests of ``deploy/kubernetes``: valid, and in step with ``serve``.

Rendered with Kustomize (``kubectl kustomize``, or the renderer of ``kustomize.py``),
validated offline against the API schemas of Kubernetes versions with the
``kubernetes-validate`` package, then checked against the server itself: every flag exists
in ``order-policy serve --help`` and parses, and ports, probes, the drain time, mounts and
selectors agree with what those flags say.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kustomize import KustomizeError, render, render_kubectl, render_python

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
TREES = ("base", "bundle-server", "overlays/production")
# The oldest version with a preStop `sleep` action on by default, and the newest known.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
POD_IP = "10.0.0.7"


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {tree: render(KUBE / tree) for tree in TREES}


@pytest.fixture(scope="module")
def serve_help() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--help"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _one(objects, "Deployment", "order-policy")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _expanded_args(objects: list[dict[str, Any]]) -> list[str]:
    """The container's args with $(VAR) replaced as the kubelet does (every VAR must exist)."""
    container = _container(objects)
    values: dict[str, str] = {}
    for env in container.get("env", []):
        source = env.get("valueFrom", {})
        if "value" in env:
            values[env["name"]] = env["value"]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            values[env["name"]] = _one(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "status.podIP":
            values[env["name"]] = POD_IP
    out = []
    for arg in container["args"]:
        for name in re.findall(r"\$\((\w+)\)", arg):
            assert name in values, f"`{arg}` uses $({name}), which the container's env does not define"
        out.append(re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg))
    return out


def _serve_args(objects: list[dict[str, Any]]) -> Any:
    from server.cli import build_parser

    assert _container(objects)["command"] == ["order-policy"]
    return build_parser().parse_args(_expanded_args(objects))


def _admin_on_pod_ip(ns: Any) -> int | None:
    """The admin port when the admin API listens on the pod IP; None when on loopback only."""
    from server.settings import split_address

    host, port = split_address(ns.admin_address)
    if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return None
    assert host == POD_IP, f"admin listens on `{host}`: the pod IP ($(POD_IP)) or loopback"
    assert ns.tls_cert, "off loopback the admin API needs TLS (bearer tokens are refused in cleartext)"
    return int(port)


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_admin_api_on_loopback_in_base_and_for_operations_in_production(rendered, tree: str) -> None:
    admin = _admin_on_pod_ip(_serve_args(rendered[tree]))
    assert (admin is None) == (tree == "base")


# -- rendering and schema validation ------------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed: nothing to compare with")
@pytest.mark.parametrize("tree", TREES)
def test_own_renderer_matches_kubectl_kustomize(tree: str) -> None:
    """Where kubectl is missing the own renderer stands in: it must give the same objects."""
    mine = {_key(o): o for o in render_python(KUBE / tree)}
    theirs = {_key(o): o for o in render_kubectl(KUBE / tree)}
    assert mine == theirs


def test_own_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        render_python(tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap, name: c}\n    patch: 'data: {a: b}'\n"
    )
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    with pytest.raises(KustomizeError, match="JSON 6902"):
        render_python(tmp_path)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("tree", TREES)
def test_manifests_are_valid_kubernetes_objects(rendered, tree: str, version: str) -> None:
    """Strict validation: unknown fields and wrong types fail, as the API server would refuse them."""
    import kubernetes_validate

    assert rendered[tree]
    for obj in rendered[tree]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_validation_refuses_a_broken_deployment(rendered) -> None:
    """The check itself fails on a misspelt field and on a port that is not a number."""
    import kubernetes_validate

    deployment = _one(rendered["overlays/production"], "Deployment", "order-policy")
    misspelt = copy.deepcopy(deployment)
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[-1], strict=True)
    bad_port = copy.deepcopy(deployment)
    bad_port["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"] = "health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad_port, KUBERNETES_VERSIONS[-1], strict=True)


# -- in step with `order-policy serve` --------------------------------------------------------


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_every_flag_exists_in_serve_help_and_parses(rendered, serve_help: str, tree: str) -> None:
    args = _expanded_args(rendered[tree])
    assert args[0] == "serve"
    offered = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", serve_help))
    used = {a.split("=", 1)[0] for a in args[1:] if a.startswith("--")}
    assert used
    assert not used - offered, f"flags not in `serve --help`: {sorted(used - offered)}"
    ns = _serve_args(rendered[tree])
    assert ns.bundle.startswith(("http://", "https://"))
    assert ns.poll_interval > 0
    assert ns.workers == 1, "one worker per pod: the HorizontalPodAutoscaler adds pods, not workers"
    assert ns.state_dir is not None
    assert ns.verification_key is not None


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_ports_and_probes_match_the_flags(rendered, tree: str) -> None:
    from server.rpcserver import LIVENESS_SERVICE

    objects = rendered[tree]
    ns = _serve_args(objects)
    container = _container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    expected = {"grpc": ns.port, "health": ns.health_port, "metrics": ns.metrics_port}
    admin = _admin_on_pod_ip(ns)
    if admin is not None:
        expected["admin"] = admin
    assert ports == expected
    # Native gRPC probes on the plaintext health port; readiness asks for "" (SERVING only
    # once a bundle is loaded), liveness and start-up for the service that does not wait for one.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == ns.health_port, probe
    assert container["readinessProbe"]["grpc"].get("service", "") == ""
    assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE
    pod = _one(objects, "Deployment", "order-policy")["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ns.metrics_port
    for name in ("order-policy", "order-policy-headless"):
        [port] = _one(objects, "Service", name)["spec"]["ports"]
        assert port["port"] == ns.port
        assert port["targetPort"] == "grpc"
    assert _one(objects, "Service", "order-policy-headless")["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_termination_outlasts_prestop_and_drain(rendered, tree: str) -> None:
    ns = _serve_args(rendered[tree])
    spec = _one(rendered[tree], "Deployment", "order-policy")["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + ns.grace + 1


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_pod_is_locked_down_and_files_come_from_the_right_volumes(rendered, tree: str) -> None:
    objects = rendered[tree]
    ns = _serve_args(objects)
    spec = _one(objects, "Deployment", "order-policy")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The image's user (Dockerfile USER) is the pod's user.
    [user] = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == tuple(map(int, user))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}

    def volume_of(path: Path) -> dict[str, Any]:
        holders = [m for m in mounts if Path(path).is_relative_to(m)]
        assert holders, f"`{path}` is on no volume (the root filesystem is read-only)"
        return mounts[max(holders, key=len)]

    assert "emptyDir" in volume_of(ns.state_dir)
    assert "emptyDir" in volume_of(Path("/tmp"))
    secret_files = [ns.verification_key, ns.admin_token_file, ns.tls_cert, ns.tls_key, ns.tls_client_ca]
    for path in filter(None, secret_files):
        assert "secret" in volume_of(path), path
    if tree == "overlays/production":
        # production serves TLS with client certificates
        assert ns.tls_cert
        assert ns.tls_key
        assert ns.tls_client_ca


@pytest.mark.parametrize("tree", ["base", "overlays/production"])
def test_selectors_network_policy_and_autoscaling_target_the_pods(rendered, tree: str) -> None:
    objects = rendered[tree]
    ns = _serve_args(objects)
    deployment = _one(objects, "Deployment", "order-policy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HorizontalPodAutoscaler owns the replica count"

    def selects(selector: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    for name in ("order-policy", "order-policy-headless"):
        assert selects(_one(objects, "Service", name)["spec"]["selector"])
    assert selects(_one(objects, "PodDisruptionBudget", "order-policy")["spec"]["selector"]["matchLabels"])
    hpa = _one(objects, "HorizontalPodAutoscaler", "order-policy")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "order-policy"}
    assert hpa["minReplicas"] >= 2
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    policy = _one(objects, "NetworkPolicy", "order-policy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"])
    assert policy["policyTypes"] == ["Ingress"]
    rules = {port["port"]: rule["from"] for rule in policy["ingress"] for port in rule["ports"]}
    admin = _admin_on_pod_ip(ns)
    assert set(rules) == {ns.port, ns.metrics_port} | ({admin} if admin is not None else set())
    [callers] = rules[ns.port]
    assert callers["podSelector"]["matchLabels"] == {"order-policy/client": "true"}
    if admin is not None:  # admin only from the operations namespace, nothing else
        assert rules[admin] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "operations"}}}]


def test_client_service_config_round_robins_and_retries_unavailable(rendered) -> None:
    """The callers' service config (also used by `make fleet`) as published in the ConfigMap."""
    from server.rpcserver import SERVICE_NAME

    source = json.loads((KUBE / "base" / "client-service-config.json").read_text())
    published = _one(rendered["overlays/production"], "ConfigMap", "order-policy-client")
    assert json.loads(published["data"]["service-config.json"]) == source
    assert source["loadBalancingConfig"] == [{"round_robin": {}}]
    [method] = source["methodConfig"]
    assert method["name"] == [{"service": SERVICE_NAME}]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method["retryPolicy"]["maxAttempts"] >= 3


def test_bundle_server_serves_the_url_of_the_config_map(rendered) -> None:
    objects = rendered["overlays/production"]
    url = _one(objects, "ConfigMap", "order-policy-bundle")["data"]["BUNDLE_URL"]
    host, port = re.match(r"https?://([^:/]+):(\d+)/", url).groups()
    service = _one(objects, "Service", host.split(".")[0])
    assert [p["port"] for p in service["spec"]["ports"]] == [int(port)]
    conf = _one(objects, "ConfigMap", "order-policy-bundles-nginx")["data"]["nginx.conf"]
    assert f"listen {port};" in conf
    assert "etag on;" in conf


# -- the Deployment's command line, run for real on loopback ------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_the_deployments_command_line_serves_on_loopback(rendered, tmp_path: Path) -> None:
    """`serve` with the base Deployment's args (paths and ports moved to loopback and a temp dir).

    Probes on the health port (liveness, readiness once the URL's bundle is loaded), no
    decisions there; decisions on the decision port, logged to stdout; metrics on the
    metrics port; SIGTERM exits 0 within the pod's termination grace period.
    """
    import hashlib
    import signal
    import time
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server._gen.orderpolicy.v1 import order_policy_pb2 as pb
    from server._gen.orderpolicy.v1 import order_policy_pb2_grpc as pb_grpc
    from server.bundle.archive import generate_keypair
    from server.rpcserver import LIVENESS_SERVICE
    from tests.fleet.bundles import BundleServer, make_revision
    from tests.fleet.rehearsal import FIXTURE
    from tests.support.servers import free_port

    objects = rendered["base"]
    spec = _one(objects, "Deployment", "order-policy")["spec"]["template"]["spec"]
    generate_keypair(tmp_path / "signing.pem", tmp_path / "signing.pub")
    revision = make_revision(FIXTURE, tmp_path, "deploy-1", tmp_path / "signing.pem", serial=1)
    (tmp_path / "tokens").write_text(f"sha256:{hashlib.sha256(b'secret').hexdigest()} ops\n")
    ports = {"port": free_port(), "health-port": free_port(), "metrics-port": free_port()}
    admin_address = f"127.0.0.1:{free_port()}"  # the base keeps admin on loopback; not on 50052 here
    bundles = BundleServer()
    bundles.publish(revision.archive)
    bundles.start()
    moved = {
        "bundle": bundles.url,
        "verification-key": str(tmp_path / "signing.pub"),
        "state-dir": str(tmp_path / "state"),
        "admin-token-file": str(tmp_path / "tokens"),
        "host": "127.0.0.1",
        **{k: str(v) for k, v in ports.items()},
    }
    argv = []
    for arg in _expanded_args(objects):
        name, eq, value = arg.partition("=")
        argv.append(f"{name}={moved.get(name[2:], value)}" if eq else arg)
    assert argv[0] == "serve"
    assert {a.split("=")[0][2:] for a in argv[1:]} >= set(moved)
    assert not any(a.startswith("--admin-address") for a in argv), "the base serves admin on the default"
    argv.append(f"--admin-address={admin_address}")
    out_path = tmp_path / "stdout"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with open(out_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", *argv],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.DEVNULL,
            env={**env, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )
    try:
        health = f"127.0.0.1:{ports['health-port']}"

        def health_status(service: str) -> int | None:
            with grpc.insecure_channel(health) as channel:
                try:
                    return (
                        health_pb2_grpc.HealthStub(channel)
                        .Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                        .status
                    )
                except grpc.RpcError:
                    return None

        deadline = time.monotonic() + 90
        while health_status("") != health_pb2.HealthCheckResponse.SERVING:
            assert process.poll() is None, "serve exited with the Deployment's args"
            assert time.monotonic() < deadline, "not ready within 90 s"
            time.sleep(0.1)
        assert health_status(LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
        order = json.dumps({"id": "o-deploy", "status": "received", "details": {"type": "testkit"}})
        request = pb.DecideRequest(action=pb.ACTION_CANCEL_ORDER, order_json=order)
        with grpc.insecure_channel(health) as channel, pytest.raises(grpc.RpcError) as info:
            pb_grpc.OrderPolicyServiceStub(channel).Decide(request, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(f"127.0.0.1:{ports['port']}") as channel:
            decision = pb_grpc.OrderPolicyServiceStub(channel).Decide(request, timeout=5).decision
        assert decision.bundle.revision == "deploy-1"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics-port']}/metrics", timeout=5) as resp:
            assert 'revision="deploy-1"' in resp.read().decode()
        # The admin API with the token whose hash is in the Secret's file (loopback: no TLS needed).
        from server._gen.orderpolicy.v1 import bundle_admin_pb2 as apb
        from server._gen.orderpolicy.v1 import bundle_admin_pb2_grpc as apb_grpc

        with grpc.insecure_channel(admin_address) as channel:
            admin = apb_grpc.BundleAdminServiceStub(channel)
            status = admin.GetStatus(apb.GetStatusRequest(), timeout=5, metadata=[("authorization", "Bearer secret")])
            assert status.active.revision == "deploy-1"
            assert status.source == bundles.url
            with pytest.raises(grpc.RpcError) as info:
                admin.GetStatus(apb.GetStatusRequest(), timeout=5, metadata=[("authorization", "Bearer wrong")])
            assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(spec["terminationGracePeriodSeconds"]) == 0
        assert time.monotonic() - started < spec["terminationGracePeriodSeconds"]
        logged = [json.loads(line) for line in out_path.read_text().splitlines() if line.startswith("{")]
        assert decision.decision_id in {entry.get("decision_id") for entry in logged}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        bundles.stop()
