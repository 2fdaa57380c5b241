"""Render the Kustomize trees of ``deploy/kubernetes`` into Kubernetes objects.

``render(path)`` uses ``kubectl kustomize`` when kubectl is installed and this module's
own renderer otherwise. The own renderer implements only the parts of Kustomize that the
trees use, with Kustomize's documented meaning, and refuses anything else:

* ``resources``: YAML files (several documents each) and directories holding a
  ``kustomization.yaml``, rendered first (their own namespace, images, ...);
* ``configMapGenerator`` with ``files`` (``key=path`` or ``path``) and ``literals``, and
  ``options.disableNameSuffixHash: true`` (no hash suffix, so no name references to rewrite);
* ``patches`` with a ``target`` (``kind``, ``name``) and a JSON 6902 patch (a list of
  ``add``/``replace``/``remove`` operations) given inline (``patch``) or as a file (``path``);
* ``namespace``: set on every namespaced object;
* ``images``: ``newName``/``newTag``/``digest`` for containers whose image has that name.

The tests compare it with ``kubectl kustomize`` wherever kubectl exists.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "render", "render_kubectl", "render_python"]

_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
}
_KNOWN = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "namespace", "images"}


class KustomizeError(Exception):
    """A kustomization this renderer does not implement, or that is wrong."""


def render(path: str | Path) -> list[dict[str, Any]]:
    """The objects of the kustomization at ``path`` (kubectl when installed)."""
    if shutil.which("kubectl"):
        return render_kubectl(path)
    return render_python(path)


def render_kubectl(path: str | Path) -> list[dict[str, Any]]:
    """``kubectl kustomize path``, parsed."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_python(path: str | Path) -> list[dict[str, Any]]:
    """This module's own rendering of the kustomization at ``path``."""
    root = Path(path)
    kfile = root / "kustomization.yaml"
    try:
        spec = yaml.safe_load(kfile.read_text()) or {}
    except OSError as exc:
        raise KustomizeError(f"cannot read `{kfile}`: {exc.strerror}") from None
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        raise KustomizeError(f"`{kfile}`: fields not implemented here: {', '.join(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        target = root / entry
        if target.is_dir():
            objects.extend(render_python(target))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
    for generator in spec.get("configMapGenerator", []):
        objects.append(_config_map(root, generator))
    for patch in spec.get("patches", []):
        _apply_patch(root, patch, objects)
    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in _CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in _containers(objects):
            _set_image(container, image)
    return objects


def _config_map(root: Path, generator: dict[str, Any]) -> dict[str, Any]:
    if not (generator.get("options") or {}).get("disableNameSuffixHash"):
        raise KustomizeError(
            f"configMapGenerator `{generator.get('name')}`: only `disableNameSuffixHash: true` is implemented"
        )
    data: dict[str, str] = {}
    for item in generator.get("files", []):
        key, _, rel = item.rpartition("=")
        data[key or Path(rel).name] = (root / rel).read_text()
    for item in generator.get("literals", []):
        key, _, value = item.partition("=")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data}


def _apply_patch(root: Path, patch: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    text = (root / patch["path"]).read_text() if "path" in patch else patch.get("patch", "")
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise KustomizeError("only JSON 6902 patches (a list of operations) are implemented")
    target = patch.get("target") or {}
    matched = [
        o
        for o in objects
        if all(
            o.get(k) == v if k == "kind" else o.get("metadata", {}).get(k) == v
            for k, v in target.items()
            if k in ("kind", "name", "namespace")
        )
    ]
    if not matched:
        raise KustomizeError(f"patch target {target} matches no object")
    for obj in matched:
        for op in ops:
            _json_patch(obj, op)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _json_patch(doc: Any, op: dict[str, Any]) -> None:
    *parents, last = _pointer(op["path"])
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind not in ("add", "replace", "remove"):
        raise KustomizeError(f"JSON 6902 operation `{kind}` is not implemented")
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[index] = copy.deepcopy(op["value"])
        else:
            del node[index]
    else:
        if kind != "add" and last not in node:
            raise KustomizeError(f"`{op['path']}` does not exist")
        if kind == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])


def _containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        spec = obj.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") or (spec if obj.get("kind") == "Pod" else {})
        out.extend(pod.get("containers", []) + pod.get("initContainers", []))
    return out


def _set_image(container: dict[str, Any], image: dict[str, Any]) -> None:
    current = container.get("image", "")
    name, digest = current.split("@", 1) if "@" in current else (current, "")
    tag = ""
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    if name != image["name"]:
        return
    name = image.get("newName", name)
    if "digest" in image:
        container["image"] = f"{name}@{image['digest']}"
        return
    tag = image.get("newTag", tag)
    container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and not tag else "")
