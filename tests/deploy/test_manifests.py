"""Renders the Kustomize base and example overlay and checks them against Kubernetes schemas."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv

from sinas_devstack.nats_auth import NATS_ROLES, role_permissions
from sinas_devstack.stack import SECRET_HOLDERS

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"
SERVICES = ("gateway", "scheduler", "executor", "notifier")
# What the executor keeps so that workers can run under their own uids (see executor.yaml).
EXECUTOR_CAPABILITIES = {
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "SETGID",
    "SETUID",
    "SYS_ADMIN",
}
# The Secret holding DATABASE_URL, the admin and encryption keys and the signing secret.
SHARED_SECRET = "sinas-secrets"
# Kinds our schemas don't cover (custom resources) are checked field by field below.
CUSTOM_KINDS = {"ScaledObject", "Certificate", "Issuer"}
# Where each gRPC pod mounts its own certificate Secret, and the settings that point there.
TLS_MOUNT = "/etc/sinas/tls"
TLS_ENV = {
    "INTERNAL_TLS": "mtls",
    "INTERNAL_TLS_CA_FILE": f"{TLS_MOUNT}/ca.crt",
    "INTERNAL_TLS_CERT_FILE": f"{TLS_MOUNT}/tls.crt",
    "INTERNAL_TLS_KEY_FILE": f"{TLS_MOUNT}/tls.key",
}
GRPC_PORTS = {"scheduler": 50051, "executor": 50061, "notifier": 50071}

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
            # Kubelet gRPC probes speak no TLS: gRPC services are probed by our command.
            assert "grpc" not in check, (name, probe)
            if service == "gateway":
                assert check["httpGet"]["path"] == "/health"
            else:
                assert check["exec"]["command"] == [
                    "python",
                    "-m",
                    "sinas_common.healthcheck",
                    f"127.0.0.1:{GRPC_PORTS[service]}",
                    name,
                ], (name, probe)
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
                "emptyDir" in volumes[v["name"]]
                for v in pod["containers"][0]["volumeMounts"]
                if v["mountPath"] != TLS_MOUNT
            )
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] >= 1000, name


def _shared_secret_keys(pod: Obj) -> set[str]:
    """The keys of `sinas-secrets` a pod can read; "*" when it gets the whole Secret."""
    keys: set[str] = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None and ref["name"] == SHARED_SECRET:
                keys.add(ref["key"])
        for source in container.get("envFrom", []):
            if source.get("secretRef", {}).get("name") == SHARED_SECRET:
                keys.add("*")
    for volume in pod.get("volumes", []):
        sources = [volume, *volume.get("projected", {}).get("sources", [])]
        for source in sources:
            if SHARED_SECRET in (
                source.get("secret", {}).get("secretName"),
                source.get("secret", {}).get("name"),
            ):
                keys.add("*")
    return keys


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_each_pod_reads_only_its_own_secrets(build: str) -> None:
    objects = BUILDS[build]
    template = set(_find(objects, "Secret", SHARED_SECRET)["stringData"])
    # Every secret has a decided set of holders (the one `make run` and the tests apply too).
    assert template <= SECRET_HOLDERS.keys()
    pods = dict(_pod_specs(objects))
    for service in SERVICES:
        expected = {key for key in template if service in SECRET_HOLDERS[key]}
        assert _shared_secret_keys(pods[f"sinas-{service}"]) == expected, service
    # Migrating needs the database and nothing else of the scheduler's.
    assert _shared_secret_keys(pods["sinas-migrate"]) == {"DATABASE_URL"}
    assert not _shared_secret_keys(pods["sinas-executor"])


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_each_grpc_pod_mounts_its_own_certificate_and_points_at_it(build: str) -> None:
    objects = BUILDS[build]
    pods = dict(_pod_specs(objects))
    certificates = {o["spec"]["secretName"]: o for o in objects if o["kind"] == "Certificate"}
    config = _find(objects, "ConfigMap", "sinas-config")["data"]
    assert config["SCHEDULER_TLS_SERVER_NAME"] == "sinas-scheduler"
    assert config["SCHEDULER_ADDR"].partition(":")[0] == config["SCHEDULER_TLS_SERVER_NAME"]
    held: set[str] = set()
    for service in SERVICES:
        name = f"sinas-{service}"
        pod = pods[name]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {key: env.get(key) for key in TLS_ENV} == TLS_ENV, name
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == TLS_MOUNT]
        assert mount["readOnly"] is True, name
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        secret = volume["secret"]["secretName"]
        assert secret == f"{name}-tls", name
        # Group-readable at most: the executor's workers (other uids) can't read the key.
        assert volume["secret"]["defaultMode"] & 0o007 == 0, name
        held.add(secret)
        certificate = certificates[secret]["spec"]
        assert certificate["commonName"] == name
        assert certificate["dnsNames"] == [name]
        assert certificate["uris"] == [f"spiffe://sinas/{service}"]
        assert {"server auth", "client auth"} <= set(certificate["usages"])
        assert "ipAddresses" not in certificate
        assert certificate["issuerRef"] == {
            "name": "sinas-internal-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
        assert _duration_hours(certificate["renewBefore"]) < _duration_hours(
            certificate["duration"]
        )
    # No pod mounts another's certificate, nor the CA's key.
    for name, pod in pods.items():
        secrets = {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        assert secrets <= {f"{name}-tls"}, name
    ca = _find(objects, "Certificate", "sinas-internal-ca")["spec"]
    assert ca["isCA"] is True
    assert ca["issuerRef"]["name"] == "sinas-selfsigned"
    assert _find(objects, "Issuer", "sinas-selfsigned")["spec"] == {"selfSigned": {}}
    issuer = _find(objects, "Issuer", "sinas-internal-ca")["spec"]
    assert issuer == {"ca": {"secretName": ca["secretName"]}}


def _duration_hours(value: str) -> int:
    assert value.endswith("h"), value
    return int(value.removesuffix("h"))


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


def test_compose_gives_each_service_only_its_own_secrets() -> None:
    compose = yaml.safe_load((K8S.parent / "compose.yaml").read_text())["services"]
    for service in SERVICES:
        environment = set(compose[service].get("environment", {}))
        # Entries with no holders (NATS_PASSWORD) are per-service credentials, each its own.
        held = {key for key in environment & SECRET_HOLDERS.keys() if SECRET_HOLDERS[key]}
        assert all(service in SECRET_HOLDERS[key] for key in held), (service, held)
    scheduler = set(compose["scheduler"]["environment"])
    assert {"DATABASE_URL", "SINAS_ENCRYPTION_KEY"} <= scheduler
    migrate = set(compose["migrate"]["environment"])
    assert {key for key in migrate & SECRET_HOLDERS.keys() if SECRET_HOLDERS[key]} == {
        "DATABASE_URL"
    }


NATS_USERS_SECRET = "sinas-nats-users"
NATS_CLIENTS = ("scheduler", "executor", "notifier")


def _secret_keys(pod: Obj, secret: str) -> set[str]:
    """The keys of `secret` a pod's containers read, "*" for all of it."""
    keys: set[str] = set()
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None and ref["name"] == secret:
                keys.add(ref["key"])
        if any(s.get("secretRef", {}).get("name") == secret for s in container.get("envFrom", [])):
            keys.add("*")
    if any(v.get("secret", {}).get("secretName") == secret for v in pod.get("volumes", [])):
        keys.add("*")
    return keys


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_each_nats_client_logs_in_as_its_own_user(build: str) -> None:
    objects = BUILDS[build]
    passwords = set(_find(objects, "Secret", NATS_USERS_SECRET)["stringData"])
    assert passwords == {f"{service}-password" for service in NATS_CLIENTS}
    pods = dict(_pod_specs(objects))
    for name, pod in pods.items():
        service = name.removeprefix("sinas-")
        env = {e["name"]: e.get("value") for e in pod["containers"][0].get("env", [])}
        if service in NATS_CLIENTS:
            assert env["NATS_USER"] == service, name
            assert _secret_keys(pod, NATS_USERS_SECRET) == {f"{service}-password"}, name
        else:
            assert "NATS_USER" not in env, name
            assert not _secret_keys(pod, NATS_USERS_SECRET), name
    # No user rides in the shared ConfigMap, which every service reads.
    config = _find(objects, "ConfigMap", "sinas-config")["data"]
    assert not {"NATS_USER", "NATS_PASSWORD"} & set(config)


def _ingress_sources(policy: Obj, port: int) -> set[str]:
    """The app names allowed in on `port` by a policy; "*" for a rule without sources."""
    sources: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        if not any(p["port"] == port for p in rule.get("ports", [])):
            continue
        if "from" not in rule:
            sources.add("*")
        for peer in rule.get("from", []):
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            sources.add(labels.get("app.kubernetes.io/name") or str(labels))
    return sources


def _egress_targets(objects: list[Obj], port: int) -> set[str]:
    """The Sinas pods whose policies let them out on `port` to anything in the cluster."""
    allowed: set[str] = set()
    for policy in objects:
        if policy["kind"] != "NetworkPolicy":
            continue
        name = policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        for rule in policy["spec"].get("egress", []):
            on_port = any(p.get("port") == port for p in rule.get("ports", []))
            if on_port and any("podSelector" in peer for peer in rule.get("to", [])):
                allowed.add(str(name))
    return allowed


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_only_the_services_that_need_them_reach_nats_and_postgres(build: str) -> None:
    objects = BUILDS[build]
    nats_policy = _find(objects, "NetworkPolicy", "sinas-nats")
    assert nats_policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nats"}
    assert _ingress_sources(nats_policy, 4222) == {f"sinas-{s}" for s in NATS_CLIENTS}
    assert _ingress_sources(nats_policy, 6222) == {"nats"}
    assert _egress_targets(objects, 4222) == {f"sinas-{s}" for s in NATS_CLIENTS}

    postgres = _find(objects, "NetworkPolicy", "sinas-postgres")
    assert postgres["spec"]["podSelector"]["matchLabels"] == {"cnpg.io/cluster": "sinas-db"}
    assert _ingress_sources(postgres, 5432) == {
        "sinas-scheduler",
        "sinas-migrate",
        str({"cnpg.io/cluster": "sinas-db"}),
    }
    assert _egress_targets(objects, 5432) == {"sinas-scheduler", "sinas-migrate"}


def test_the_documented_nats_users_are_the_ones_make_run_provisions() -> None:
    readme = (K8S.parent / "README.md").read_text()
    [values] = [
        block.partition("\n")[2]
        for block in readme.split("```")
        if block.startswith("yaml\n# nats-values.yaml")
    ]
    users = yaml.safe_load(values)["config"]["merge"]["authorization"]["users"]
    assert [user["user"] for user in users] == list(NATS_ROLES)
    for user in users:
        granted = role_permissions(user["user"], ["SINAS"])
        assert user["permissions"]["publish"]["allow"] == list(granted.publish)
        assert user["permissions"]["subscribe"]["allow"] == list(granted.subscribe)
        assert user["password"] == f"<< ${user['user'].upper()}_PASSWORD >>"
    assert "no_auth_user" not in values
