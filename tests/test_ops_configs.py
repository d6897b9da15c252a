"""The deployment files load and say what operations rely on: configs/local.yaml and production.yaml
(Serve schema + the typed builder's AppConfig + user_config), configs/kuberay-rayservice.yaml (the same
Serve config, GCS fault tolerance on Valkey), cluster.yaml (Ray's cluster schema, GPU workers, GCS FT,
metrics port)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from actors import topology
from actors.models.config import AppConfig, RuntimeSettings
from serve_app.builder import build_app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> dict:
    """The first YAML document of a file (the KubeRay manifest's RayService; its NetworkPolicy follows)."""
    return next(yaml.safe_load_all((ROOT / path).read_text()))


def councils_app(serve_config: dict) -> dict:
    ServeDeploySchema.model_validate(serve_config)  # what `serve deploy` checks first
    (app,) = serve_config["applications"]
    assert app["name"] == "councils" and app["import_path"] == "serve_app.builder:build_app"
    return app


@pytest.mark.parametrize("path", ["configs/local.yaml", "configs/production.yaml"])
def test_serve_configs_load_through_the_typed_builder(path):
    app = councils_app(load(path))
    config = AppConfig.model_validate(app["args"])
    assert build_app(config) is not None
    (ingress,) = app["deployments"]
    assert ingress["name"] == "Ingress"
    RuntimeSettings.model_validate(ingress["user_config"])
    assert config.prune_councils is False and config.valkey_url is None  # Valkey from COUNCILS_VALKEY_URL


@pytest.mark.parametrize("path", ["configs/local.yaml", "configs/production.yaml"])
def test_the_ingress_bounds_its_queue_and_its_waiters(path):
    """Issue 23: Serve's max_queued_requests is set (beyond it a fast 503, not an unbounded queue), in every
    config and in the deployment's own default, and waiters stay below a replica's max_ongoing_requests."""
    from serve_app.app import Ingress

    (ingress,) = councils_app(load(path))["deployments"]
    assert 0 < ingress["max_queued_requests"] <= 1024
    assert 0 < Ingress._deployment_config.max_queued_requests <= 1024
    ongoing = ingress.get("max_ongoing_requests", Ingress._deployment_config.max_ongoing_requests)
    config = AppConfig.model_validate(councils_app(load(path))["args"])
    assert config.limits.max_waiters < ongoing
    settings = RuntimeSettings.model_validate(ingress["user_config"])
    assert settings.max_wait_s <= settings.max_timeout_s


def test_production_config():
    serve_config = load("configs/production.yaml")
    assert serve_config["proxy_location"] == "EveryNode" and serve_config["http_options"]["host"] == "0.0.0.0"
    app = councils_app(serve_config)
    config = AppConfig.model_validate(app["args"])
    (engine,) = config.engines
    assert engine.backend == "vllm" and engine.model == "Qwen/Qwen3-0.6B"
    assert engine.num_gpus == 1 and engine.enable_prefix_caching
    assert config.default_councils.engine == engine.name
    assert app["deployments"][0]["num_replicas"] >= 2


def test_kuberay_rayservice_serves_the_production_config_with_gcs_fault_tolerance():
    manifest = load("configs/kuberay-rayservice.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    spec = manifest["spec"]
    assert yaml.safe_load(spec["serveConfigV2"]) == load("configs/production.yaml")
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    ft = cluster["gcsFaultToleranceOptions"]
    assert ft["redisAddress"]
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "councils-valkey", "key": "password"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["metrics-export-port"] == "8080"
    assert "redis-password" not in head["rayStartParams"]  # KubeRay sets it from gcsFaultToleranceOptions
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "verifier", "gpu"}  # councils/ingress, verifiers, engines (docs/topology.md)
    gpu = groups["gpu"]
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The Valkey URL (with its password) reaches the ingress replicas, and only them, as a file from its secret.
    cpu = groups["cpu"]["template"]["spec"]
    path = _env(cpu["containers"][0])["COUNCILS_VALKEY_URL_FILE"]["value"]
    assert _secret_of(cpu, path) == "councils-valkey"


def test_cluster_yaml_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load("cluster.yaml")
    validate_config(prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text())))
    gpu = raw["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["max_workers"] >= gpu["min_workers"] >= 1
    assert any('[gpu]"' in c and "pip install" in c for c in raw["setup_commands"])
    head = " ".join(raw["head_start_ray_commands"])
    assert "RAY_REDIS_ADDRESS=" in head and "RAY_external_storage_namespace=" in head
    assert "COUNCILS_GCS_REDIS_PASSWORD=" in head and "--num-cpus=0" in head and "--metrics-export-port=8080" in head
    assert "--metrics-export-port=8080" in " ".join(raw["worker_start_ray_commands"])


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_of(pod: dict, path: str) -> str | None:
    """The Kubernetes secret whose volume the pod's container mounts above `path`, or None."""
    (container,) = pod["containers"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    for m in container.get("volumeMounts", []):
        if m["name"] in secrets and path.startswith(m["mountPath"] + "/"):
            return secrets[m["name"]]
    return None


def _kuberay_pods() -> dict[str, tuple[dict, set[str]]]:
    """{group: (pod spec, custom resources the group offers)}, the head as "head"."""
    from tests.test_topology_configs import kuberay_resources

    cluster = load("configs/kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    pods = {"head": (cluster["headGroupSpec"]["template"]["spec"],
                     set(kuberay_resources(cluster["headGroupSpec"]["rayStartParams"])))}
    for g in cluster["workerGroupSpecs"]:
        pods[g["groupName"]] = (g["template"]["spec"], set(kuberay_resources(g["rayStartParams"])))
    return pods


def test_shipped_manifests_read_the_api_tokens_from_secret_files_and_turn_ray_token_auth_on():
    """Issue 12: an API on 0.0.0.0 needs its tokens (from secret files, never inline), Ray token auth is on
    in every shipped cluster config, the dashboard is not public, and no secret is on a command line."""
    production = load("configs/production.yaml")
    assert production["http_options"]["host"] == "0.0.0.0"
    args = councils_app(production)["args"]
    assert args.get("allow_unauthenticated", False) is False and args.get("public_docs", False) is False
    config = AppConfig.model_validate(args)
    assert config.limits.max_councils and config.limits.max_active_total and config.limits.max_sse_connections
    text = (ROOT / "configs" / "production.yaml").read_text()
    assert "COUNCILS_API_TOKEN:" not in text and "COUNCILS_ADMIN_TOKEN:" not in text  # no inline token

    # KubeRay: token files mounted from a secret on every pod that may run an ingress replica (councils_worker),
    # on no other; Ray token auth.
    manifest = load("configs/kuberay-rayservice.yaml")
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    for group, (pod, offered) in _kuberay_pods().items():
        (container,) = pod["containers"]
        env = _env(container)
        for var in ("COUNCILS_API_TOKEN_FILE", "COUNCILS_ADMIN_TOKEN_FILE", "COUNCILS_IDEMPOTENCY_SECRET_FILE"):
            if topology.WORKER in offered:
                assert _secret_of(pod, env[var]["value"]) == "councils-api", (group, var)
            else:
                assert var not in env, (group, var)
        assert "COUNCILS_API_TOKEN" not in env and "COUNCILS_ADMIN_TOKEN" not in env
        assert "RAY_AUTH_MODE" not in env or env["RAY_AUTH_MODE"].get("value") == "token"

    # ray up: token auth on every node, the dashboard on loopback, secrets from 0600 files, none on a command line
    # nor in a sourced shell file.
    raw = load("cluster.yaml")
    assert raw["file_mounts"]["~/councils-ray"] == "~/.councils/ray"
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "serve_app.ray_start start --head" in head and "--redis-password" not in head
    for cmds in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        cmd = " ".join(cmds)
        assert "RAY_AUTH_MODE=token" in cmd and "RAY_AUTH_TOKEN_PATH=" in cmd
        assert "councils.env" not in cmd and ". ~/" not in cmd and "source " not in cmd
    worker = " ".join(raw["worker_start_ray_commands"])
    for var in ("COUNCILS_VALKEY_URL_FILE", "COUNCILS_API_TOKEN_FILE", "COUNCILS_ADMIN_TOKEN_FILE",
                "COUNCILS_IDEMPOTENCY_SECRET_FILE"):
        assert f"{var}=$HOME/councils-secrets/" in worker, var
    assert "COUNCILS_VALKEY_URL=" not in worker and "COUNCILS_API_TOKEN=" not in worker
    fetch = " ".join(raw["head_setup_commands"]
                     + raw["available_node_types"]["cpu_worker"]["worker_setup_commands"])
    assert fetch.count("umask 077") == 2 and "--with-decryption" in fetch and "> ~/councils-secrets/" in fetch
    everything = yaml.safe_dump(raw)
    assert "$COUNCILS_VALKEY_PASSWORD" not in everything and "COUNCILS_VALKEY_PASSWORD=" not in everything


# -- no secret where model code runs (issue 23) -----------------------------------------------------------------
SECRET_NAMES = ("valkey-password", "valkey-url", "api-token", "admin-token", "idempotency-secret")
SECRET_VARS = ("COUNCILS_VALKEY_URL", "COUNCILS_API_TOKEN", "COUNCILS_ADMIN_TOKEN", "COUNCILS_IDEMPOTENCY_SECRET",
               "COUNCILS_GCS_REDIS_PASSWORD", "REDIS_PASSWORD")


def test_no_secret_reaches_a_verifier_node_of_cluster_yaml():
    """The nodes that offer councils_verifier run code a model or a caller wrote. What reaches every node
    (file_mounts, the global commands) and what the verifier type itself runs hold Ray's token alone: no Valkey
    password or URL, no API token, no idempotency secret, and no instance profile that could fetch one."""
    raw = load("cluster.yaml")
    types = raw["available_node_types"]
    verifiers = {name: t for name, t in types.items() if topology.VERIFIER in t["resources"]}
    assert verifiers, "no node type offers councils_verifier"
    # What every node gets: file_mounts (the project and Ray's token dir only) and the global commands.
    assert set(raw["file_mounts"]) == {"~/councils-on-ray", "~/councils-ray"}
    assert all("secrets" not in src for src in raw["file_mounts"].values())
    every_node = yaml.safe_dump({k: raw.get(k) for k in ("file_mounts", "cluster_synced_files", "initialization_commands",
                                                         "setup_commands", "worker_setup_commands")})
    for name in SECRET_NAMES + ("ssm",):
        assert name not in every_node, name
    for name, node in verifiers.items():
        # A type that offers the verifier must not be one of the secret-holding kinds, nor fetch secrets itself.
        assert set(node["resources"]) & {topology.WORKER, topology.ENGINE} == set(), name
        own = yaml.safe_dump({k: node.get(k) for k in ("initialization_commands", "worker_setup_commands", "docker")})
        for secret in SECRET_NAMES + ("ssm", "councils-secrets"):
            assert secret not in own, (name, secret)
        assert "IamInstanceProfile" not in node["node_config"], name  # nothing to fetch SSM parameters with
        assert node["node_config"]["MetadataOptions"]["HttpTokens"] == "required"
    # The global worker start command names secret files by path only (they exist on cpu_worker nodes alone).
    worker = " ".join(raw["worker_start_ray_commands"])
    for var in SECRET_VARS:
        assert f"{var}=" not in worker, var
    assert "$(<" not in worker and "cat " not in worker  # no secret value read into the verifier's environment
    # Only the councils' type fetches the ingress's secrets, and only the head the GCS's password.
    assert "valkey-password" in " ".join(raw["head_setup_commands"])
    assert "api-token" in " ".join(types["cpu_worker"]["worker_setup_commands"])


def test_no_secret_reaches_the_kuberay_verifier_group_and_its_pods_are_locked_down():
    """The KubeRay verifier group: no secret volume, no secret or Valkey URL in its environment (Ray's token is
    what KubeRay's authOptions adds to every Ray container, see docs/security.md), non-root, a read-only root
    filesystem, no service-account token, and a NetworkPolicy in the same manifest that denies its egress but to
    the Ray cluster's own pods and DNS."""
    docs = list(yaml.safe_load_all((ROOT / "configs" / "kuberay-rayservice.yaml").read_text()))
    pods = _kuberay_pods()
    verifiers = {g: pod for g, (pod, offered) in pods.items() if topology.VERIFIER in offered}
    assert set(verifiers) == {"verifier"}
    for group, (pod, offered) in pods.items():  # the verifier's resource is offered by no secret-holding group
        assert topology.VERIFIER not in offered or not offered & {topology.WORKER, topology.ENGINE}, group
    group = next(g for g in docs[0]["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "verifier")
    pod = verifiers["verifier"]
    (container,) = pod["containers"]
    text = yaml.safe_dump(pod)
    assert "secret" not in text.lower()  # no secret volume, no secretKeyRef, no *_SECRET* variable
    env = _env(container)
    for var in env:
        assert not var.startswith("COUNCILS_") or var not in SECRET_VARS, var
        assert "VALKEY" not in var and "REDIS" not in var and "TOKEN" not in var, var
    assert all("valueFrom" not in e for e in env.values())
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"].get("runAsNonRoot", True) is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # Ray's session dir is writable
    assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in container["volumeMounts"]}
    assert all("emptyDir" in v for v in pod["volumes"])

    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["apiVersion"] == "networking.k8s.io/v1"
    labels = group["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Egress"]
    allowed = policy["spec"]["egress"]
    # Ray's own pods (GCS, raylets, object transfers) and DNS on port 53: nothing else, no ipBlock, no open rule.
    assert allowed[0] == {"to": [{"podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}]}
    assert {p["port"] for p in allowed[1]["ports"]} == {53} and len(allowed) == 2
    assert all(rule.get("to") for rule in allowed) and "ipBlock" not in yaml.safe_dump(allowed)
    # The other groups do not carry the selector's labels (the policy is the verifiers' alone).
    for name, (other, _) in pods.items():
        if name != "verifier":
            assert "councils.io/sandbox" not in yaml.safe_dump(other), name
