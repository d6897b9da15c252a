"""Where things run: the custom Ray resources that keep councils, engines and verification off the head.

One set of names, used everywhere the cluster is described: `make run` (councils_local/launcher.py gives its worker
node all three), the test clusters (tests/ray_cluster.py), `cluster.yaml` and configs/kuberay-rayservice.yaml
(tests/test_topology_configs.py checks that they use these names). The head node offers none of them (and
`num-cpus 0`): it runs the GCS, the dashboard and the Serve controller only, so a head crash takes no council,
engine or model with it (docs/topology.md).

| resource | requested by | offered by |
|---|---|---|
| `councils_worker` | council actors, the ingress replicas | CPU worker nodes (`make run`: its worker) |
| `councils_engine` | engine actors | GPU worker nodes (`make run`: its worker) |
| `councils_verifier` | verification tasks (sandboxed verifiers) | verifier nodes, which hold no secret but Ray's token (`make run`: its worker) |

The resources are markers, not capacities: a node offers `CAPACITY` (1) of each and an actor or task asks for
`DEMAND` (0.001), so up to 1000 fit on a node; what limits them is CPU, GPU and memory.
"""

from __future__ import annotations

import json

WORKER = "councils_worker"
ENGINE = "councils_engine"
VERIFIER = "councils_verifier"
ALL = (WORKER, ENGINE, VERIFIER)

CAPACITY = 1  # an integer: cluster.yaml's schema (ray-schema.json) allows whole resources only
DEMAND = 0.001


# Ray settings that make a head crash cost seconds (docs/topology.md), set on the nodes of `make run`,
# cluster.yaml and the KubeRay manifest (tests/test_topology_configs.py checks them there).
# - Every node: a raylet and every worker process (councils, engines, ingress replicas, a node's proxy) wait this
#   long for a GCS that went away before they give up and exit (Ray's default: 60 s). The head is back within
#   seconds; 600 s also covers a head that restarts with backoff or a head pod that is rescheduled.
SURVIVE_GCS_ENV = {"RAY_gcs_rpc_server_reconnect_timeout_s": "600"}
# - The head (its GCS): a restarted GCS health-checks the nodes it loaded from storage; the crashed head's old
#   raylet is declared dead after initial delay + threshold x period (Ray's defaults: 5 s + 5 x 3 s = 20 s), and
#   only then are the actors that lived there restarted (the Serve controller, the head's proxy). A refused
#   connection fails a check at once; a slow raylet still gets the 10 s timeout of each check, so these shorter
#   periods do not declare a busy node dead.
HEAD_RECOVERY_ENV = {**SURVIVE_GCS_ENV,
                     "RAY_health_check_initial_delay_ms": "1000",
                     "RAY_health_check_period_ms": "1000",
                     "RAY_health_check_failure_threshold": "3"}


def demand(resource: str) -> dict[str, float]:
    """The `resources=` option of an actor or task that must run on a node offering `resource`."""
    if resource not in ALL:
        raise ValueError(f"unknown councils resource {resource!r}; one of {ALL}")
    return {resource: DEMAND}


def node_resources(*resources: str) -> dict[str, float]:
    """What a node offers (`ray start --resources`): the given resources, default all three."""
    names = resources or ALL
    for name in names:
        demand(name)  # validates
    return {name: CAPACITY for name in names}


def resources_arg(*resources: str) -> str:
    """`ray start --resources=<this>`."""
    return json.dumps(node_resources(*resources), separators=(",", ":"))
