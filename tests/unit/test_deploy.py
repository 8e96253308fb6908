"""deploy/: the compose file and the Kubernetes manifests, checked offline.

The kustomize overlays are rendered here by :func:`render_kustomization` (resources plus
strategic-merge patches, the subset the manifests use) and validated against the Kubernetes
OpenAPI schemas with ``kubernetes-validate``; where ``kubectl`` exists its built-in kustomize
must render the same objects. ``docker compose config`` runs where the Compose v2 plugin
exists (it needs no engine) and is skipped elsewhere with the reason.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
OVERLAYS = ("cpu", "gpu")


# ------------------------------------------------------------------------ kustomize rendering
def _merge(base, patch):
    """Strategic merge as kustomize applies it to these manifests.

    Maps merge key by key; lists whose items are maps with a ``name`` (containers, env, ports,
    volumes, volumeMounts) merge item by item on that key; any other list is replaced.
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    named = (isinstance(base, list) and isinstance(patch, list) and patch
             and all(isinstance(i, dict) and "name" in i for i in base + patch))
    if named:
        merged = list(base)
        for item in patch:
            index = next((i for i, b in enumerate(merged) if b["name"] == item["name"]), None)
            if index is None:
                merged.append(item)
            else:
                merged[index] = _merge(merged[index], item)
        return merged
    return patch


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def render_kustomization(folder: pathlib.Path) -> list[dict]:
    """Objects of a kustomization folder: its resources (files or folders), then its patches."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    assert not unsupported, f"{folder}: render_kustomization does not implement {unsupported}"
    objects: list[dict] = []
    for resource in spec.get("resources", []):
        path = (folder / resource).resolve()
        if path.is_dir():
            objects += render_kustomization(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    by_key = {_key(o): i for i, o in enumerate(objects)}
    assert len(by_key) == len(objects), f"{folder}: duplicate objects"
    for patch_entry in spec.get("patches", []):
        patch = yaml.safe_load((folder / patch_entry["path"]).read_text())
        key = _key(patch)
        assert key in by_key, f"{folder}/{patch_entry['path']} patches {key}, which the resources lack"
        objects[by_key[key]] = _merge(objects[by_key[key]], patch)
    return objects


def _objects(overlay: str) -> dict[tuple[str, str], dict]:
    return {_key(o): o for o in render_kustomization(K8S / "overlays" / overlay)}


def _triton(objects) -> dict:
    spec = objects["Deployment", "clickmask"]["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "triton")


# --------------------------------------------------------------------------------- kubernetes
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_validates_against_the_kubernetes_schemas(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (dev extra)")
    objects = render_kustomization(K8S / "overlays" / overlay)
    assert {kind for kind, _ in map(_key, objects)} == {
        "ServiceAccount", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_render_matches_kubectl_kustomize_where_kubectl_exists(overlay):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the in-test renderer is the only check here")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    theirs = {_key(o): o for o in yaml.safe_load_all(out) if o}
    assert theirs == _objects(overlay)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_hit_tritons_health_endpoints(overlay):
    triton = _triton(_objects(overlay))
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == TRITON_PORTS
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "--strict-readiness=true" in triton["args"]
    assert triton["resources"]["requests"]["cpu"] and triton["resources"]["requests"]["memory"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_disruption_budget_select_the_triton_pods(overlay):
    objects = _objects(overlay)
    pod_labels = objects["Deployment", "clickmask"]["spec"]["template"]["metadata"]["labels"]
    deployment_selector = objects["Deployment", "clickmask"]["spec"]["selector"]["matchLabels"]
    assert deployment_selector.items() <= pod_labels.items()
    container_ports = {p["name"] for p in _triton(objects)["ports"]}
    for name in ("clickmask", "clickmask-headless"):
        service = objects["Service", name]["spec"]
        assert service["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in service["ports"]} <= container_ports
    assert {p["name"]: p["port"] for p in objects["Service", "clickmask"]["spec"]["ports"]} == TRITON_PORTS
    assert objects["Service", "clickmask-headless"]["spec"]["clusterIP"] == "None"
    pdb = objects["PodDisruptionBudget", "clickmask"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = objects["HorizontalPodAutoscaler", "clickmask"]["spec"]
    assert pdb["minAvailable"] < hpa["minReplicas"], "a drain must be able to evict one pod"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscaler_uses_a_triton_metric_that_the_prometheus_adapter_serves(overlay):
    objects = _objects(overlay)
    hpa = objects["HorizontalPodAutoscaler", "clickmask"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "clickmask"}
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    served = {rule["name"]["as"]: rule for rule in adapter["rules"]["custom"]}
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] in ("Pods", "External")
        name = metric[metric["type"].lower()]["metric"]["name"]
        assert name in served, f"HPA metric {name} has no adapter rule"
        assert served[name]["seriesQuery"].startswith("nv_inference_"), "scale on Triton's own metrics"
        assert 'model="clickmask"' in served[name]["metricsQuery"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_model_repository_is_fetched_into_the_pod_before_triton_starts(overlay):
    objects = _objects(overlay)
    pod = objects["Deployment", "clickmask"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    config_maps = {ref["configMapRef"]["name"] for ref in fetch["envFrom"] if "configMapRef" in ref}
    assert config_maps == {"clickmask-model-source"} and ("ConfigMap", "clickmask-model-source") in objects
    assert objects["ConfigMap", "clickmask-model-source"]["data"]["MODEL_REPOSITORY_URI"].endswith("/")
    assert ("ServiceAccount", pod["serviceAccountName"]) in objects
    mounts = {m["name"]: m["mountPath"] for m in fetch["volumeMounts"]}
    triton = _triton(objects)
    assert mounts == {"models": "/models"}
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in triton["volumeMounts"]
    assert "--model-repository=/models" in triton["args"]
    assert any(v["name"] == "models" for v in pod["volumes"])


def test_only_the_gpu_overlay_asks_for_a_gpu():
    gpu = _triton(_objects("gpu"))["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1
    assert "tensorrt" in _objects("gpu")["ConfigMap", "clickmask-model-source"]["data"]["MODEL_REPOSITORY_URI"]
    cpu = _triton(_objects("cpu"))["resources"]
    assert "nvidia.com/gpu" not in cpu.get("limits", {}) and "nvidia.com/gpu" not in cpu["requests"]
    assert "onnxruntime" in _objects("cpu")["ConfigMap", "clickmask-model-source"]["data"]["MODEL_REPOSITORY_URI"]


def test_strategic_merge_merges_named_lists_and_replaces_others():
    base = {"containers": [{"name": "a", "image": "x", "args": [1, 2]}, {"name": "b"}], "tolerations": [{"k": 1}]}
    patch = {"containers": [{"name": "a", "args": [3]}], "tolerations": [{"k": 2}]}
    assert _merge(base, patch) == {"containers": [{"name": "a", "image": "x", "args": [3]}, {"name": "b"}],
                                   "tolerations": [{"k": 2}]}


# ------------------------------------------------------------------------------------ compose
def _interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR:?error}`` / ``${VAR}`` substitution."""
    env = {"CLICKMASK_ADMIN_KEY": "test-admin-key-0123456789"} if env is None else env

    def repl(match):
        name, kind, value = match.group(1), match.group(2), match.group(3) or ""
        if kind == "?" and not env.get(name):
            raise ValueError(f"compose refuses to start: {value}")
        return env.get(name) or (value if kind == "-" else "")

    return re.sub(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}", repl, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(_interpolate((DEPLOY / "compose.yaml").read_text()))


def test_compose_runs_triton_from_ngc_with_a_gpu_reservation(compose):
    triton = compose["services"]["triton"]
    assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:2\d\.\d\d-py3", triton["image"])
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert {int(p.rsplit(":", 1)[1]) for p in triton["ports"]} == set(TRITON_PORTS.values())
    assert all(p.startswith("127.0.0.1:") for p in triton["ports"]), "loopback unless CLICKMASK_BIND is set"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert "--model-repository=/models" in triton["command"]


def test_compose_and_kubernetes_run_the_same_triton_image_and_metrics_flags(compose):
    triton = _triton(_objects("gpu"))
    assert triton["image"] == compose["services"]["triton"]["image"]
    metrics_flags = [a for a in triton["args"] if a.startswith("--metrics-config")]
    assert metrics_flags and set(metrics_flags) <= set(compose["services"]["triton"]["command"])


def test_compose_mounts_exist_in_the_repository(compose):
    expected = {
        "prometheus": {"/etc/prometheus/": DEPLOY / "prometheus"},
        "grafana": {"/etc/grafana/provisioning": DEPLOY / "grafana" / "provisioning",
                    "/var/lib/grafana/dashboards": DEPLOY / "grafana" / "dashboards"},
    }
    for service, mounts in expected.items():
        binds = {}
        for volume in compose["services"][service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                binds[target] = (DEPLOY / source).resolve()
        assert binds == {t: p.resolve() for t, p in mounts.items()}
        for target, path in mounts.items():
            assert path.is_dir(), f"{service} mounts {path} at {target}, which does not exist"
    assert (DEPLOY / "prometheus" / "prometheus.yml").is_file()
    model_mount = compose["services"]["triton"]["volumes"][0]
    assert model_mount == "./model-repository:/models:ro", "generated by 'clickmask export repository'"


def test_prometheus_scrapes_the_compose_triton_service(compose):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert f"triton:{TRITON_PORTS['metrics']}" in targets
    assert "triton" in compose["services"]


def test_compose_interpolation_honours_overrides():
    text = "${CLICKMASK_BIND:-127.0.0.1}:8001 ${TRITON_TAG:-24.08-py3}"
    assert _interpolate(text, {"CLICKMASK_BIND": "0.0.0.0"}) == "0.0.0.0:8001 24.08-py3"


def test_docker_compose_config_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker CLI here has no Compose v2 plugin ('docker compose' is an unknown command); "
                    "Debian only packages Compose v1 (1.29), which predates the Compose Specification")
    result = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, env={**os.environ, "DOCKER_HOST": ""})
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------- generated server flags
def test_compose_runs_exactly_the_generated_locked_down_command(compose):
    from clickmask.export.deploy_files import triton_command

    expected = yaml.safe_load(_interpolate(yaml.safe_dump(triton_command("compose"))))
    assert compose["services"]["triton"]["command"] == expected
    assert "--model-control-mode=none" in expected and "--grpc-use-ssl=true" in expected
    assert any(v.endswith(":/tls:ro") for v in compose["services"]["triton"]["volumes"])
    assert compose["services"]["triton"]["deploy"]["resources"]["limits"]["memory"]


def test_compose_refuses_to_start_without_an_admin_key():
    with pytest.raises(ValueError, match="set CLICKMASK_ADMIN_KEY"):
        _interpolate((DEPLOY / "compose.yaml").read_text(), {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_runs_exactly_the_generated_locked_down_command(overlay):
    from clickmask.export.deploy_files import triton_command

    triton = _triton(_objects(overlay))
    assert [*triton["command"], *triton["args"]] == triton_command("kubernetes")
    env = {e["name"]: e for e in triton["env"]}
    assert env["CLICKMASK_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "clickmask-admin"
    mounts = {m["name"]: m for m in triton["volumeMounts"]}
    assert mounts["tls"]["mountPath"] == "/tls" and mounts["tls"]["readOnly"]
    assert triton["resources"]["limits"]["memory"] and triton["resources"]["requests"]["cpu"]
    assert triton["securityContext"]["allowPrivilegeEscalation"] is False


def test_generated_flags_match_the_embedded_servers_security_flags():
    from clickmask.export.deploy_files import triton_command
    from clickmask.serving.server import ServerConfig, TritonServer

    server = TritonServer(ServerConfig(admin_key="k" * 20))
    embedded = [a.replace("k" * 20, "KEY") for a in server._security_args()]
    deployed = [a.replace("$(CLICKMASK_ADMIN_KEY)", "KEY") for a in triton_command("kubernetes")]
    assert all(flag in deployed for flag in embedded)  # same restricted APIs, same header


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt"])
def test_ngc_model_configs_carry_the_queue_policy_and_batching(backend):
    from clickmask.export import model_config as mc

    contract = mc.Contract(320)
    text = (mc.onnxruntime_config(contract) if backend == "onnxruntime" else mc.tensorrt_config(contract))
    assert "dynamic_batching" in text and "preferred_batch_size" in text
    assert "timeout_action: REJECT" in text and "max_queue_size:" in text
