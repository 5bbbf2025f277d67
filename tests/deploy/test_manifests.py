"""Renders the Kustomize base and example overlay and checks them against Kubernetes schemas."""

from __future__ import annotations

import copy
import ipaddress
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


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_only_the_executor_leaves_apparmor_for_its_sandbox_mounts(build: str) -> None:
    for name, pod in _pod_specs(BUILDS[build]):
        assert "appArmorProfile" not in pod["securityContext"], name
        assert "runtimeClassName" not in pod, name
        for container in pod["containers"]:
            context = container["securityContext"]
            # seccomp is the pod's RuntimeDefault everywhere: no container loosens it.
            assert "seccompProfile" not in context, name
            assert "procMount" not in context, name
            apparmor = context.get("appArmorProfile")
            if name == "sinas-executor":
                # The runtimes' default AppArmor profile denies mount (deploy/README.md).
                assert apparmor == {"type": "Unconfined"}
            else:
                assert apparmor is None, name


def _dockerfile_stages() -> dict[str, str]:
    text = (K8S.parent / "docker" / "Dockerfile").read_text()
    stages: dict[str, str] = {}
    for chunk in text.split("\nFROM ")[1:]:
        header, _, body = chunk.partition("\n")
        stages[header.split()[-1]] = body.replace("\\\n", " ")
    return stages


def test_the_image_has_pasta_and_compose_lets_the_executor_use_it() -> None:
    runtime = _dockerfile_stages()["runtime"]
    installs = [
        line.split()
        for line in runtime.splitlines()
        if line.startswith("RUN ") and "apt-get install" in line
    ]
    assert any("passt" in words for words in installs), runtime
    executor = yaml.safe_load((K8S.parent / "compose.yaml").read_text())["services"]["executor"]
    assert "apparmor=unconfined" in executor["security_opt"]
    assert "no-new-privileges:true" in executor["security_opt"]
    assert "/dev/net/tun:/dev/net/tun" in executor["devices"]
    assert set(executor["cap_add"]) == EXECUTOR_CAPABILITIES


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
        "ipBlock" in peer and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0")
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# What egress to "the internet" must never reach: private, shared (CGNAT), link-local (cloud
# metadata) and loopback ranges, IPv6's unique-local, link-local and loopback, and every
# IPv4 address in its IPv4-mapped IPv6 form; the IPv4 ranges also in their NAT64 form.
PRIVATE_RANGES: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
        "::ffff:0:0/96",
    )
)


def _embedded(prefix: str, network: ipaddress.IPv4Network) -> ipaddress.IPv6Network:
    """An IPv4 network inside an IPv6 /96 (IPv4-mapped ::ffff:0:0, NAT64 64:ff9b::)."""
    base = int(ipaddress.IPv6Address(prefix)) | int(network.network_address)
    return ipaddress.IPv6Network((base, 96 + network.prefixlen))


def _ip_blocks(policy: Obj) -> list[Obj]:
    return [
        peer["ipBlock"]
        for rule in policy["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]


def _private_ranges_let_through(policy: Obj) -> set[str]:
    """Each private range (or IPv4-mapped form of one) an ipBlock of the policy lets in."""
    leaks: set[str] = set()
    for block in _ip_blocks(policy):
        cidr = ipaddress.ip_network(block["cidr"])
        excepted = [ipaddress.ip_network(e) for e in block.get("except", [])]
        forbidden: list[Network] = list(PRIVATE_RANGES)
        forbidden += [
            _embedded(prefix, r)
            for prefix in ("::ffff:0:0", "64:ff9b::")
            for r in PRIVATE_RANGES
            if isinstance(r, ipaddress.IPv4Network)
        ]
        for network in forbidden:
            if network.version != cidr.version or not network.overlaps(cidr):
                continue
            # mypy can't narrow the pair to one family from the version check.
            covered = any(
                network.version == e.version and network.subnet_of(e)  # type: ignore[arg-type]
                for e in excepted
            )
            if not covered:
                leaks.add(str(network))
    return leaks


def _allows(policy: Obj, address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return any(
        ip in ipaddress.ip_network(block["cidr"])
        and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
        for block in _ip_blocks(policy)
    )


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_egress_to_the_internet_excludes_every_private_range(build: str) -> None:
    policies = [o for o in BUILDS[build] if o["kind"] == "NetworkPolicy"]
    for policy in policies:
        assert not _private_ranges_let_through(policy), policy["metadata"]["name"]
    for name in ("sinas-executor", "sinas-notifier"):
        policy = _find(policies, "NetworkPolicy", name)
        # Both address families reach the public internet: functions call any public API.
        assert {b["cidr"] for b in _ip_blocks(policy)} == {"0.0.0.0/0", "::/0"}, name
        for public in ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "2001:4860:4860::8888"):
            assert _allows(policy, public), (name, public)
        for private in (
            "10.1.2.3",
            "100.100.100.200",
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::169.254.169.254",
        ):
            assert not _allows(policy, private), (name, private)
        # NAT64 stays open for public IPv4 addresses (IPv6-only clusters).
        assert _allows(policy, "64:ff9b::8.8.8.8"), name


@pytest.mark.parametrize("excluded", [*(str(r) for r in PRIVATE_RANGES), "64:ff9b::a9fe:0/112"])
def test_a_missing_private_range_is_caught(excluded: str) -> None:
    policy = copy.deepcopy(_find(BUILDS["base"], "NetworkPolicy", "sinas-executor"))
    for block in _ip_blocks(policy):
        block["except"] = [e for e in block.get("except", []) if e != excluded]
    assert excluded in _private_ranges_let_through(policy)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_executor_reaches_only_scheduler_gateway_nats_dns_and_the_internet(build: str) -> None:
    objects = BUILDS[build]
    policy = _find(objects, "NetworkPolicy", "sinas-executor")
    in_cluster: set[tuple[str, int]] = set()
    for rule in policy["spec"]["egress"]:
        peers = rule["to"]
        if all("ipBlock" in peer for peer in peers):
            assert "ports" not in rule  # the internet, on any port
            continue
        [peer] = peers
        assert set(peer) == {"podSelector"}, peer
        app = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        in_cluster |= {(app, port["port"]) for port in rule["ports"]}
    assert in_cluster == {
        ("sinas-scheduler", 50051),
        ("sinas-gateway", 8000),
        ("nats", 4222),
    }
    config = _find(objects, "ConfigMap", "sinas-config")["data"]
    assert config["SINAS_API_URL"] == "http://sinas-gateway:8000"
    dns = _find(objects, "NetworkPolicy", "sinas-dns-and-metrics")
    assert dns["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "sinas"}
    [rule] = dns["spec"]["egress"]
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


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
