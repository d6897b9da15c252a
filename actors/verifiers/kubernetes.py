"""Kubernetes manifests: kubernetes.schema validates every YAML or JSON document with apiVersion and kind
against the schemas that the kubernetes-validate package ships (offline), strict: unknown fields fail.

An unknown kind in a built-in API group (no dot, or *.k8s.io) fails, as a typo would; a custom resource
(any other group) has no schema here and is left unchecked, said in the message.
"""

from __future__ import annotations

import kubernetes_validate

from .base import Job
from .data import json_blocks, parse_json, parse_yaml

KUBERNETES_VERSION = "1.33"


def _manifests(job: Job) -> list[tuple[int, dict]]:
    docs: list[tuple[int, object]] = []
    sources = [(b, parse_yaml) for b in job.blocks("yaml")] + [(b, lambda c: [parse_json(c)]) for b in json_blocks(job)]
    for block, parse in sources:
        try:
            docs += [(block.line, d) for d in parse(block.code)]
        except ValueError:
            continue  # yaml.parse / json.parse report it
    return [(line, d) for line, d in docs
            if isinstance(d, dict) and isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str)]


def _builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def verify(job: Job) -> None:
    manifests = _manifests(job)
    if not manifests:
        job.check("kubernetes.schema", "skipped", "no Kubernetes manifest (a YAML document with apiVersion and kind)")
        return
    errors, custom = [], []
    for line, doc in manifests:
        name = doc.get("metadata", {}).get("name") if isinstance(doc.get("metadata"), dict) else None
        what = f"{doc['kind']}/{name or '?'} (block at line {line})"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            errors.append(f"{what}: at {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            if _builtin(doc["apiVersion"]):
                errors.append(f"{what}: no kind {doc['kind']!r} in apiVersion {doc['apiVersion']!r}")
            else:
                custom.append(f"{doc['kind']} ({doc['apiVersion']})")
        except Exception as e:
            errors.append(f"{what}: {type(e).__name__}: {e}")
    note = f"; custom resources not checked: {', '.join(custom)}" if custom else ""
    checked = len(manifests) - len(custom)
    if errors:
        job.check("kubernetes.schema", "failed", f"{len(errors)} of {checked} manifest(s) invalid: {errors[0]}{note}")
    elif checked:
        job.check("kubernetes.schema", "passed",
                  f"{checked} manifest(s) valid for Kubernetes {KUBERNETES_VERSION} (strict){note}")
    else:
        job.check("kubernetes.schema", "skipped", f"no schema here for custom resources: {', '.join(custom)}")
