"""deploy/k8s, the kustomize base: every manifest is valid against the Kubernetes API schemas
(offline, strict), the kustomization lists exactly the folder, and the manifests agree with each
other and with the app: real settings, real probe routes, selectors that select, a grace period
that outlasts the drain, the image's user."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient

from serving.main import create_app
from serving.settings import Settings
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the base is written for (every field it uses is in that API), and the
# newest whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# variables in the pods' environment that are not NMT_* settings, and who reads them
OTHER_VARIABLES = {"FORWARDED_ALLOW_IPS": "uvicorn: the proxies whose X-Forwarded-For it believes"}


def manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of the base by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in manifest_files():
        for doc in load(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{path.name}: a second {key[0]} named {key[1]}"
            found[key] = doc
    return found


def the(kind: str, name: str) -> dict[str, Any]:
    return resources()[(kind, name)]


def pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom (ConfigMaps, Secrets), then
    env, with $(VAR) references expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(the("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(the("Secret", source["secretRef"]["name"])["stringData"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = the("Secret", ref["name"])["stringData"][ref["key"]]
    return env


def api_container() -> dict[str, Any]:
    (container,) = the("Deployment", "nmt-api")["spec"]["template"]["spec"]["containers"]
    return container


def setting_names() -> set[str]:
    return {"NMT_" + name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_are_valid_kubernetes_objects(path, version):
    docs = load(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises, naming the field


def test_strict_validation_catches_a_misspelt_field():
    doc = the("PodDisruptionBudget", "nmt-api")
    doc["spec"]["maxUnavailabe"] = doc["spec"].pop("maxUnavailable")
    with pytest.raises(kubernetes_validate.ValidationError, match="maxUnavailabe"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_exactly_the_manifests_in_the_folder():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert set(listed) == {path.name for path in manifest_files()}
    assert len(resources()) >= 12  # and no two objects share a kind and name


def test_the_pods_settings_are_real_and_valid(monkeypatch):
    env = pod_env(api_container())
    settings_vars = {name for name in env if name.startswith("NMT_")}
    assert settings_vars - setting_names() == set(), "not a field of serving/settings.py"
    others = set(env) - settings_vars - {"REDIS_PASSWORD"}
    assert others <= set(OTHER_VARIABLES), f"unknown variables {others - set(OTHER_VARIABLES)}"
    for name in [name for name in os.environ if name.startswith("NMT_")]:
        monkeypatch.delenv(name)
    for name in settings_vars:
        monkeypatch.setenv(name, env[name])
    settings = Settings()  # every value parses and is in range
    assert settings.api_keys and all(key.startswith("REPLACE-ME") for key in settings.api_keys)
    assert settings.metrics_token
    # one thread per decode slot, as many as the CPU limit: a pod sees its node's cores, so the
    # defaults would oversubscribe the quota
    limit = api_container()["resources"]["limits"]["cpu"]
    assert settings.decode_slots * settings.threads == float(limit)
    # a request in flight at SIGTERM ends (answered or 504) within the drain
    assert settings.request_timeout_s <= settings.shutdown_timeout_s


def test_the_api_reaches_redis_through_its_service_with_the_password():
    env = pod_env(api_container())
    url = urlsplit(env["NMT_REDIS_URL"])
    service = the("Service", "nmt-redis")
    assert url.scheme == "redis" and url.hostname == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.password == the("Secret", "nmt-redis")["stringData"]["password"]
    assert re.fullmatch(r"/\d+", url.path)
    redis = the("StatefulSet", "nmt-redis")["spec"]["template"]["spec"]["containers"][0]
    assert "--requirepass" in redis["args"]


def test_secrets_hold_placeholders_only():
    for (kind, name), doc in resources().items():
        if kind == "Secret":
            assert "data" not in doc, f"{name}: use stringData placeholders, never encoded values"
            for key, value in doc["stringData"].items():
                assert all(part.startswith("REPLACE-ME") for part in value.split(",")), f"{name}.{key}"


def test_probes_use_real_routes_that_need_no_credentials():
    """Probes send no Authorization header: with API keys set, /health and /ready must still
    answer (a 401 would make every pod unready, then restart it)."""
    app = create_app(Settings(api_keys=["a-key"]))
    get_routes = {path for path, operations in app.openapi()["paths"].items() if "get" in operations}
    container = api_container()
    port_names = {port["name"] for port in container["ports"]}
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
    client = TestClient(app)  # no lifespan: the models are not loaded, as in a pod that starts
    for kind, probe in probes.items():
        path = probe["httpGet"]["path"]
        assert path in get_routes, f"{kind}: no GET {path} in the app"
        assert probe["httpGet"]["port"] in port_names
        status = client.get(path).status_code
        assert status not in (401, 403), f"{kind}: GET {path} wants credentials"
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503  # not ready before the models are loaded


def test_shutdown_lets_the_service_drain():
    spec = the("Deployment", "nmt-api")["spec"]["template"]["spec"]
    env = pod_env(api_container())
    pre_stop = api_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(env["NMT_SHUTDOWN_TIMEOUT_S"])
    assert spec["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain


def dockerfile_uid() -> int:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    return int(re.search(r"useradd .*--uid (\d+)", text).group(1))


def test_pods_run_as_the_image_user_with_no_privileges():
    for kind, name in (("Deployment", "nmt-api"), ("StatefulSet", "nmt-redis")):
        spec = the(kind, name)["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            for resource in ("cpu", "memory"):
                assert resource in container["resources"]["requests"], f"{name}: {resource} request"
                assert resource in container["resources"]["limits"], f"{name}: {resource} limit"
    api = the("Deployment", "nmt-api")["spec"]["template"]["spec"]
    assert api["securityContext"]["runAsUser"] == dockerfile_uid()
    # the read-only root needs a writable /tmp (Python's tempfile)
    mounts = {mount["mountPath"]: mount["name"] for mount in api_container()["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in api["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # service links would inject NMT_REDIS_PORT=tcp://... and the like into the settings' prefix
    assert api["enableServiceLinks"] is False


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def test_selectors_and_references_match_the_workloads():
    objects = resources()
    api = the("Deployment", "nmt-api")
    redis = the("StatefulSet", "nmt-redis")
    api_labels = api["spec"]["template"]["metadata"]["labels"]
    redis_labels = redis["spec"]["template"]["metadata"]["labels"]
    for workload in (api, redis):
        assert selects(
            workload["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"]
        )
    assert not selects(api["spec"]["selector"]["matchLabels"], redis_labels)
    assert not selects(redis["spec"]["selector"]["matchLabels"], api_labels)

    for (kind, name), doc in objects.items():
        if kind == "Service":
            target = api if selects(doc["spec"]["selector"], api_labels) else redis
            assert selects(doc["spec"]["selector"], target["spec"]["template"]["metadata"]["labels"]), name
            ports = {p["name"] for c in target["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in ports, f"Service {name}: no container port {port['targetPort']}"
    assert selects(the("PodDisruptionBudget", "nmt-api")["spec"]["selector"]["matchLabels"], api_labels)
    hpa = the("HorizontalPodAutoscaler", "nmt-api")["spec"]
    assert (hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]) == ("Deployment", "nmt-api")
    policy = the("NetworkPolicy", "nmt-redis")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], redis_labels)
    assert selects(policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"], api_labels)

    headless = the("Service", redis["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    config_volume = next(v for v in redis["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    assert ("ConfigMap", config_volume["configMap"]["name"]) in objects


def test_scaling_and_disruptions_keep_a_replica_serving():
    deployment = the("Deployment", "nmt-api")["spec"]
    hpa = the("HorizontalPodAutoscaler", "nmt-api")["spec"]
    pdb = the("PodDisruptionBudget", "nmt-api")["spec"]
    assert "replicas" not in deployment, "the HPA owns the replica count; apply would reset it"
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert pdb["maxUnavailable"] < hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    # utilisation is relative to the request, which must exist
    assert api_container()["resources"]["requests"]["cpu"]
    # every replica's Redis pool together stays under Redis' default maxclients
    env = pod_env(api_container())
    assert hpa["maxReplicas"] * int(env["NMT_REDIS_MAX_CONNECTIONS"]) < 10_000


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", quantity).groups()
    return int(number) * units.get(unit, 1)


def test_redis_persists_and_evicts_only_expiring_keys():
    conf = dict(
        line.split(maxsplit=1)
        for line in the("ConfigMap", "nmt-redis-config")["data"]["redis.conf"].splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    assert conf["appendonly"] == "yes"
    # volatile-*: a key without a TTL is never evicted silently (the cache's keys all have one)
    assert conf["maxmemory-policy"].startswith("volatile-")
    statefulset = the("StatefulSet", "nmt-redis")["spec"]
    (container,) = statefulset["template"]["spec"]["containers"]
    assert memory_bytes(conf["maxmemory"]) < 0.8 * memory_bytes(container["resources"]["limits"]["memory"])
    (claim,) = statefulset["volumeClaimTemplates"]
    data_mount = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert data_mount["mountPath"] == conf["dir"]
    assert statefulset["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
