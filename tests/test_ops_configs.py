"""The deployment files load and say what operations rely on: configs/local.yaml and production.yaml
(Serve schema + the typed builder's AppConfig + user_config), configs/kuberay-rayservice.yaml (the same
Serve config, GCS fault tolerance on Valkey), cluster.yaml (Ray's cluster schema, GPU workers, GCS FT,
metrics port), and docs/operations.md (every metric with its tags)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from actors import metrics
from actors.models.config import AppConfig, RuntimeSettings
from serve_app.builder import build_app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def load(path: str) -> dict:
    return yaml.safe_load((ROOT / path).read_text())


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
    assert set(groups) == {"cpu", "gpu"}  # councils/ingress/verifiers, engines (docs/topology.md)
    gpu = groups["gpu"]
    container = gpu["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    for c in (head["template"]["spec"]["containers"][0], container, groups["cpu"]["template"]["spec"]["containers"][0]):
        env = {e["name"]: e for e in c["env"]}
        assert env["COUNCILS_VALKEY_URL"]["valueFrom"]["secretKeyRef"]["name"] == "councils-valkey"


def test_cluster_yaml_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = load("cluster.yaml")
    validate_config(prepare_config(yaml.safe_load((ROOT / "cluster.yaml").read_text())))
    gpu = raw["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["max_workers"] >= gpu["min_workers"] >= 1
    assert any('[gpu]"' in c and "pip install" in c for c in raw["setup_commands"])
    env_file = " ".join(raw["initialization_commands"])
    assert "RAY_REDIS_ADDRESS" in env_file and "COUNCILS_VALKEY_URL" in env_file
    head = " ".join(raw["head_start_ray_commands"])
    assert ". ~/councils.env" in head and "RAY_external_storage_namespace=" in head
    assert "COUNCILS_GCS_REDIS_PASSWORD=" in head and "--num-cpus=0" in head and "--metrics-export-port=8080" in head
    assert "--metrics-export-port=8080" in " ".join(raw["worker_start_ray_commands"])


def _env(container: dict) -> dict:
    return {e["name"]: e for e in container.get("env", [])}


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

    # KubeRay: token files mounted from a secret on every pod that may run an ingress replica; Ray token auth.
    manifest = load("configs/kuberay-rayservice.yaml")
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        (container,) = pod["containers"]
        env = _env(container)
        mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
        for var in ("COUNCILS_API_TOKEN_FILE", "COUNCILS_ADMIN_TOKEN_FILE"):
            path = env[var]["value"]
            assert any(path.startswith(mounts[name] + "/") for name in secrets if name in mounts), (var, path)
        assert "COUNCILS_API_TOKEN" not in env and "COUNCILS_ADMIN_TOKEN" not in env
        assert "RAY_AUTH_MODE" not in env or env["RAY_AUTH_MODE"].get("value") == "token"

    # ray up: token auth on every node, the dashboard on loopback, secrets from 0600 files, none on a command line.
    raw = load("cluster.yaml")
    assert "~/councils-secrets" in raw["file_mounts"]
    init = " ".join(raw["initialization_commands"])
    assert "umask 077" in init and "RAY_AUTH_MODE=token" in init and "RAY_AUTH_TOKEN_PATH" in init
    assert "COUNCILS_API_TOKEN_FILE" in init and "COUNCILS_ADMIN_TOKEN_FILE" in init
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "serve_app.ray_start start --head" in head and "--redis-password" not in head
    everything = yaml.safe_dump(raw)
    assert "$COUNCILS_VALKEY_PASSWORD" not in everything and "COUNCILS_VALKEY_PASSWORD=" not in everything
    for cmds in (raw["head_start_ray_commands"], raw["worker_start_ray_commands"]):
        assert ". ~/councils.env" in " ".join(cmds)


def test_security_doc_covers_each_item():
    doc = (ROOT / "docs" / "security.md").read_text()
    for needle in ("Threat model", "open by default", "allow_unauthenticated", "COUNCILS_ADMIN_TOKEN_FILE",
                   "max_councils", "max_agents_total", "max_active_total", "max_sse_connections", "maxmemory",
                   "appendfsync", "RAY_AUTH_MODE", "dashboard", "/proc", "public_docs", "--token-file"):
        assert needle in doc, needle


def test_operations_doc_names_every_metric_with_its_tags():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for name, (kind, _desc, tags, _buckets) in metrics.DEFINITIONS.items():
        assert name.startswith("councils_")
        exported = f"ray_{name}_total" if kind == "counter" else f"ray_{name}"
        row = next((line for line in doc.splitlines() if f"`{exported}" in line), None)
        assert row is not None, f"{exported} is not documented"
        for tag in tags:
            assert re.search(rf"\b{tag}\b", row), f"tag {tag} of {exported} is not documented"


def test_gauges_are_set_again_until_they_change(monkeypatch):
    """Ray's agent drops a gauge that is not reported again within two export intervals, so a gauge set once
    (an engine's restart count) must keep being set, with its latest value."""
    calls = []
    monkeypatch.setattr(metrics, "GAUGE_REFRESH_S", 0.05)
    monkeypatch.setattr(metrics, "_record", lambda name, method, value, tags: calls.append((name, method, value, tags)))
    monkeypatch.setattr(metrics, "_gauges", {})
    monkeypatch.setattr(metrics, "_refresher", None)
    metrics.set_inflight("DEV", 2)
    metrics.set_inflight("DEV", 1)
    time.sleep(0.3)
    again = [c for c in calls[2:] if c[0] == metrics.INFLIGHT]
    assert len(again) >= 2 and {c[2] for c in again} == {1} and all(c[1] == "set" for c in again)
    assert again[0][3] == {"role": "DEV"}
