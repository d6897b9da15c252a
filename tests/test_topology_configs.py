"""The cluster configs, checked by the ecosystem's own schemas, describe the topology `make run` starts
(docs/topology.md): a head with no CPUs and none of the councils_* resources, worker nodes offering them
(actors/topology.py), and the Ray settings that let the workers outlive a head crash.

- cluster.yaml: against the JSON schema Ray ships for cluster configs (ray/autoscaler/ray-schema.json of the
  installed Ray), with jsonschema.
- configs/kuberay-rayservice.yaml: against tests/schemas/rayservice-v1.schema.json, a structural schema of the
  ray.io/v1 RayService written for this project (the CRD's generated OpenAPI schema could not be vendored
  offline; see the schema's $comment).

Each check also fails on a deliberately broken copy.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from actors import topology
from actors.council import council_actor_options
from actors.engine_hosting import engine_actor_options
from actors.models.config import VerificationConfig
from actors.models.councils import EngineSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
RAYSERVICE_SCHEMA = ROOT / "tests" / "schemas" / "rayservice-v1.schema.json"


def load(path: str) -> dict:
    """The first YAML document of a file (the KubeRay manifest's RayService; its NetworkPolicy follows)."""
    return next(yaml.safe_load_all((ROOT / path).read_text()))


def cluster_schema_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(RAY_SCHEMA.read_text()))
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(config)]


def rayservice_schema_errors(manifest: dict) -> list[str]:
    schema = json.loads(RAYSERVICE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]


# -- cluster.yaml against Ray's schema -------------------------------------------------------------


def test_cluster_yaml_is_valid_against_the_schema_ray_ships():
    assert cluster_schema_errors(load("cluster.yaml")) == []
    # And Ray's own loader (the same schema plus its defaults) accepts it, as `ray up` would.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(load("cluster.yaml")))


@pytest.mark.parametrize("breakage", ["fractional resource", "typo at the top", "no provider", "string count"])
def test_a_broken_cluster_yaml_fails_rays_schema(breakage):
    broken = copy.deepcopy(load("cluster.yaml"))
    types = broken["available_node_types"]
    if breakage == "fractional resource":  # the autoscaler counts whole resources only
        types["gpu_worker"]["resources"][topology.ENGINE] = 0.5
    elif breakage == "typo at the top":
        broken["available_node_type"] = broken.pop("available_node_types")
    elif breakage == "no provider":
        del broken["provider"]
    elif breakage == "string count":
        types["cpu_worker"]["min_workers"] = "one"
    assert cluster_schema_errors(broken), breakage


# -- the RayService against a structural schema ----------------------------------------------------


def test_rayservice_is_valid_against_the_structural_schema():
    assert rayservice_schema_errors(load("configs/kuberay-rayservice.yaml")) == []


@pytest.mark.parametrize("breakage", ["typo in a group", "string replicas", "no head template",
                                      "unknown auth mode", "env without name", "fault tolerance without address"])
def test_a_broken_rayservice_fails_the_structural_schema(breakage):
    broken = copy.deepcopy(load("configs/kuberay-rayservice.yaml"))
    cluster = broken["spec"]["rayClusterConfig"]
    group = cluster["workerGroupSpecs"][0]
    if breakage == "typo in a group":
        group["rayStartParam"] = group.pop("rayStartParams")
    elif breakage == "string replicas":
        group["minReplicas"] = "1"
    elif breakage == "no head template":
        del cluster["headGroupSpec"]["template"]
    elif breakage == "unknown auth mode":
        cluster["authOptions"]["mode"] = "tokens"
    elif breakage == "env without name":
        group["template"]["spec"]["containers"][0]["env"].append({"value": "x"})
    elif breakage == "fault tolerance without address":
        del cluster["gcsFaultToleranceOptions"]["redisAddress"]
    assert rayservice_schema_errors(broken), breakage


# -- one topology everywhere -----------------------------------------------------------------------


def kuberay_resources(params: dict) -> dict:
    """KubeRay's rayStartParams `resources`: a JSON object inside a quoted string ('"{...}"')."""
    raw = params.get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def test_actors_and_tasks_request_the_topology_resources():
    assert council_actor_options("DEV")["resources"] == topology.demand(topology.WORKER)
    assert engine_actor_options(EngineSpec(name="e", model="m"))["resources"] == topology.demand(topology.ENGINE)
    assert VerificationConfig().resources == topology.demand(topology.VERIFIER)
    from serve_app.app import Ingress

    options = Ingress.ray_actor_options
    assert options["resources"] == topology.demand(topology.WORKER) and options["num_cpus"] == 0


def test_cluster_yaml_kuberay_and_make_run_describe_the_same_topology():
    from councils_local.launch import start

    # cluster.yaml: a head with no CPU and no councils_* resources; the worker types offer all three between them.
    raw = load("cluster.yaml")
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"].get("CPU", 0) == 0 and not set(head["resources"]) & set(topology.ALL)
    assert "--num-cpus=0" in " ".join(raw["head_start_ray_commands"])
    offered = {}
    for name, node in types.items():
        if name != raw["head_node_type"]:
            custom = {k: v for k, v in node["resources"].items() if k.startswith("councils_")}
            assert set(custom) <= set(topology.ALL), custom
            offered.update(custom)
    assert offered == topology.node_resources()
    assert topology.ENGINE in types["gpu_worker"]["resources"] and types["gpu_worker"]["resources"]["GPU"] >= 1

    # KubeRay: the same split.
    spec = load("configs/kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert "resources" not in spec["headGroupSpec"]["rayStartParams"]
    k_offered = {}
    for group in spec["workerGroupSpecs"]:
        res = kuberay_resources(group["rayStartParams"])
        assert set(res) <= set(topology.ALL), res
        k_offered.update(res)
    assert k_offered == topology.node_resources()

    # make run: the head offers nothing and no CPU, the worker offers all three.
    import inspect

    src = inspect.getsource(start.ray_nodes)
    assert "num_cpus=0" in src and "resources=topology.node_resources()" in src


def test_every_shipped_config_sets_the_head_crash_settings():
    """docs/topology.md: workers wait out a head restart; the restarted GCS finds the dead head quickly."""
    raw = load("cluster.yaml")
    head_cmd = " ".join(raw["head_start_ray_commands"])
    worker_cmd = " ".join(raw["worker_start_ray_commands"])
    for k, v in topology.HEAD_RECOVERY_ENV.items():
        assert f"{k}={v}" in head_cmd, k
    for k, v in topology.SURVIVE_GCS_ENV.items():
        assert f"{k}={v}" in worker_cmd, k

    spec = load("configs/kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]

    def env(pod_spec) -> dict:
        return {e["name"]: e.get("value") for e in pod_spec["template"]["spec"]["containers"][0].get("env", [])}

    assert topology.HEAD_RECOVERY_ENV.items() <= env(spec["headGroupSpec"]).items()
    for group in spec["workerGroupSpecs"]:
        assert topology.SURVIVE_GCS_ENV.items() <= env(group).items(), group["groupName"]


def test_local_config_puts_a_proxy_on_the_worker_too():
    assert load("configs/local.yaml")["proxy_location"] == "EveryNode"
    assert load("configs/production.yaml")["proxy_location"] == "EveryNode"
