"""Renders the Kustomize base and example overlay and checks them against Kubernetes schemas."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
SERVICES = ("gateway", "scheduler", "executor", "notifier")
# What the executor keeps so that workers can run under their own uids (see executor.yaml).
EXECUTOR_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"}
# Kinds our schemas don't cover (custom resources) are checked field by field below.
CUSTOM_KINDS = {"ScaledObject"}

Obj = dict[str, Any]


def _load_yaml(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _resolve_pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _apply_json_patch(obj: Obj, ops: list[Obj]) -> None:
    """RFC 6902 add/replace/remove, the subset our overlays use; unknown ops fail loudly."""
    for op in ops:
        *parents, last = _resolve_pointer(op["path"])
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        kind = op["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, op["value"])
            elif kind == "replace":
                node[index] = op["value"]
            elif kind == "remove":
                del node[index]
            else:
                raise ValueError(f"unsupported patch op {kind}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in node:
                raise KeyError(f"replace of a missing path {op['path']}")
            node[last] = op["value"]
        elif kind == "remove":
            del node[last]
        else:
            raise ValueError(f"unsupported patch op {kind}")


def _matches(obj: Obj, target: Obj) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("group", group) == group
    )


def _set_images(obj: Obj, images: list[Obj]) -> None:
    template = obj.get("spec", {}).get("template", {}).get("spec", {})
    for container in template.get("containers", []):
        for image in images:
            if container["image"] == image["name"]:
                name = image.get("newName", image["name"])
                container["image"] = f"{name}:{image['newTag']}" if "newTag" in image else name


def render(folder: Path) -> list[Obj]:
    """What `kustomize build folder` gives for the features our kustomizations use."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
    unknown = set(spec) - known
    assert not unknown, f"{folder}: the test renderer doesn't know {sorted(unknown)}"
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (folder / entry).resolve()
        objects.extend(render(path) if path.is_dir() else _load_yaml(path))
    objects = copy.deepcopy(objects)
    for patch in spec.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        hits = [obj for obj in objects if _matches(obj, patch["target"])]
        assert len(hits) == 1, f"{folder}: patch {patch['path']} matches {len(hits)} objects"
        _apply_json_patch(hits[0], ops)
    for obj in objects:
        if "namespace" in spec:
            obj["metadata"]["namespace"] = spec["namespace"]
        _set_images(obj, spec.get("images", []))
    return objects


def _builds() -> Iterator[tuple[str, list[Obj]]]:
    yield "base", render(K8S / "base")
    for overlay in sorted((K8S / "overlays").iterdir()):
        yield f"overlays/{overlay.name}", render(overlay)


BUILDS = dict(_builds())


def _find(objects: list[Obj], kind: str, name: str) -> Obj:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


def _pod_specs(objects: list[Obj]) -> list[tuple[str, Obj]]:
    return [
        (obj["metadata"]["name"], obj["spec"]["template"]["spec"])
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
    ]


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_every_object_validates_in_strict_mode(build: str) -> None:
    objects = BUILDS[build]
    assert len(objects) > 20
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kv.validate(obj, KUBERNETES_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field() -> None:
    deployment = copy.deepcopy(_find(BUILDS["base"], "Deployment", "sinas-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_each_service_has_deployment_service_and_disruption_budget(build: str) -> None:
    objects = BUILDS[build]
    for service in SERVICES:
        name = f"sinas-{service}"
        deployment = _find(objects, "Deployment", name)
        _find(objects, "Service", name)
        pdb = _find(objects, "PodDisruptionBudget", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 40
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][0] == f"sinas_{service}"
        for probe in ("readinessProbe", "livenessProbe"):
            check = container[probe]
            assert ("grpc" in check) != ("httpGet" in check), (name, probe)
            if service == "gateway":
                assert check["httpGet"]["path"] == "/health"
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys()
        assert {"cpu", "memory"} <= resources["limits"].keys()
    _find(objects, "ConfigMap", "sinas-config")
    _find(objects, "Secret", "sinas-secrets")
    job = _find(objects, "Job", "sinas-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "sinas_scheduler",
        "--migrate-only",
    ]


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_containers_are_locked_down(build: str) -> None:
    for name, pod in _pod_specs(BUILDS[build]):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        mounts: set[str] = set()
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["privileged"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            added = set(context["capabilities"].get("add", []))
            mounts |= {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            if name == "sinas-executor":
                assert added == EXECUTOR_CAPABILITIES
            else:
                assert not added, name
        assert "/tmp" in mounts, name
        if name == "sinas-executor":
            # Its workers' uids are set by the executor itself, which starts as root.
            assert pod["securityContext"]["runAsUser"] == 0
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            sandbox = env["EXECUTOR_SANDBOX_ROOT"]["value"]
            assert sandbox in mounts
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert all(
                "emptyDir" in volumes[v["name"]] for v in pod["containers"][0]["volumeMounts"]
            )
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] >= 1000, name


def _egress_leaves_cluster(policy: Obj) -> bool:
    return any(
        "ipBlock" in peer and peer["ipBlock"]["cidr"] == "0.0.0.0/0"
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
    )


def _ingress_from_anywhere(policy: Obj) -> bool:
    return any("from" not in rule for rule in policy["spec"].get("ingress", []))


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_network_policies_open_only_the_designed_paths(build: str) -> None:
    policies = [o for o in BUILDS[build] if o["kind"] == "NetworkPolicy"]
    deny = _find(policies, "NetworkPolicy", "sinas-default-deny")
    assert deny["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "sinas"}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    outside_in = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for p in policies
        if _ingress_from_anywhere(p)
    }
    inside_out = {
        p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for p in policies
        if _egress_leaves_cluster(p)
    }
    assert outside_in == {"sinas-gateway"}
    assert inside_out == {"sinas-executor", "sinas-notifier"}


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_autoscalers_target_gateway_and_executor(build: str) -> None:
    objects = BUILDS[build]
    hpa = _find(objects, "HorizontalPodAutoscaler", "sinas-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sinas-gateway"
    scaled = _find(objects, "ScaledObject", "sinas-executor")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert set(scaled) == {"apiVersion", "kind", "metadata", "spec"}
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sinas-executor",
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    assert all(isinstance(value, str) for value in metadata.values())
    config = _find(objects, "ConfigMap", "sinas-config")["data"]
    prefix = config["NATS_STREAM_PREFIX"]
    # The names the executor uses: sinas_common.jobstream and sinas_executor.consumer.
    assert metadata["stream"] == f"{prefix}_JOBS"
    assert metadata["consumer"] == f"{prefix}_function_executor"
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["natsServerMonitoringEndpoint"].endswith(":8222")


def test_overlay_applies_namespace_image_and_patches() -> None:
    objects = BUILDS["overlays/example"]
    assert {o["metadata"].get("namespace") for o in objects} == {"sinas"}
    executor = _find(objects, "Deployment", "sinas-executor")
    assert executor["spec"]["replicas"] == 4
    images = {c["image"] for _, pod in _pod_specs(objects) for c in pod["containers"]}
    assert images == {"registry.example.com/sinas/sinas-runtime:0.1.0"}
    config = _find(objects, "ConfigMap", "sinas-config")["data"]
    assert config["NATS_STREAM_REPLICAS"] == "3"
    assert all(isinstance(value, str) for value in config.values())
