"""JSON and YAML blocks: json.parse, json.schema (constraints.json_schema, via jsonschema) and yaml.parse.

Parsing runs in-process: it executes nothing, and YAML is read with the safe loader and refused when its
aliases would expand past MAX_NODES nodes (a "billion laughs" would otherwise blow up whatever walks
it next). A reply that is nothing but a JSON document, unfenced, counts as a JSON block.
json.schema validates the first JSON or YAML document of the proposal, in order of appearance.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import yaml

from .base import Job
from .blocks import CodeBlock, extract_code_blocks, language_of

MAX_NODES = 100_000


def parse_json(code: str) -> Any:
    """The document, or ValueError saying why not."""
    if not code.strip():
        raise ValueError("empty")
    try:
        return json.loads(code)
    except json.JSONDecodeError as e:
        raise ValueError(f"{e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_yaml(code: str) -> list[Any]:
    """The documents (empty ones left out), or ValueError saying why not."""
    if not code.strip():
        raise ValueError("empty")
    loader = yaml.SafeLoader(code)
    try:
        docs = []
        while loader.check_node():
            node = loader.get_node()
            _expanded_size(node, {}, set())
            docs.append(loader.construct_document(node))
        return [d for d in docs if d is not None]
    except yaml.YAMLError as e:
        raise ValueError(" ".join(str(e).split())) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise ValueError("a YAML alias refers to its own anchor (recursive document)")
    open_.add(id(node))
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else \
        node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes, open_) for child in children)
    if size > MAX_NODES:
        raise ValueError(f"YAML aliases expand to more than {MAX_NODES} nodes")
    open_.discard(id(node))
    sizes[id(node)] = size
    return size


def json_blocks(job: Job) -> list[CodeBlock]:
    blocks = job.blocks("json")
    stripped = job.content.strip()
    if not blocks and not extract_code_blocks(job.content) and stripped[:1] in ("{", "["):
        blocks = [CodeBlock(lang="json", code=stripped, line=1, closed=True)]
    return blocks


def _parse_check(job: Job, name: str, label: str, blocks: list[CodeBlock], parse) -> None:
    if not blocks:
        job.check(name, "skipped", f"no {label} block")
        return
    errors = []
    for b in blocks:
        try:
            parse(b.code)
        except ValueError as e:
            errors.append(f"block at line {b.line}: {e}")
    if errors:
        job.check(name, "failed", f"{len(errors)} of {len(blocks)} {label} block(s) do not parse: {errors[0]}")
    else:
        job.check(name, "passed", f"{len(blocks)} {label} block(s) parse")


def verify_json(job: Job) -> None:
    _parse_check(job, "json.parse", "JSON", json_blocks(job), parse_json)
    _schema(job)


def verify_yaml(job: Job) -> None:
    _parse_check(job, "yaml.parse", "YAML", job.blocks("yaml"), parse_yaml)


def _first_document(job: Job) -> tuple[Any, str] | None:
    for b in extract_code_blocks(job.content) or json_blocks(job):
        lang = language_of(b, job.enabled)
        try:
            if lang == "json":
                return parse_json(b.code), f"JSON block at line {b.line}"
            if lang == "yaml":
                docs = parse_yaml(b.code)
                if docs:
                    return docs[0], f"YAML block at line {b.line}"
        except ValueError:
            continue
    return None


def _schema(job: Job) -> None:
    schema = job.constraints.json_schema
    if schema is None:
        job.check("json.schema", "skipped", "no constraints.json_schema")
        return
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as e:
        job.check("json.schema", "skipped", f"constraints.json_schema is not a valid JSON Schema: {e.message}")
        return
    found = _first_document(job)
    if found is None:
        job.check("json.schema", "failed", "no JSON or YAML document that parses, to validate against the schema")
        return
    doc, where = found
    try:
        errors = list(cls(schema).iter_errors(doc))
    except Exception as e:
        job.check("json.schema", "skipped", f"constraints.json_schema could not be applied: {type(e).__name__}: {e}")
        return
    if not errors:
        job.check("json.schema", "passed", f"{where} matches constraints.json_schema")
        return
    best = jsonschema.exceptions.best_match(errors)
    path = "/".join(str(p) for p in best.absolute_path) or "(root)"
    job.check("json.schema", "failed", f"{where}: {len(errors)} error(s); at {path}: {best.message}")
