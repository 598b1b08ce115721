"""isola-oci's schema interpreter (isola.container.oci.schema) against Debian's python3-jsonschema, on the same
runtime-spec schema files: the same verdict for every document, and the field isola names is one jsonschema
also blames."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isola.container.oci import schema, spec
from isola.errors import InvalidSpecError

SYSTEM_PYTHON = "/usr/bin/python3"
JUDGE = r"""
import json, sys
import jsonschema
directory = sys.argv[1]
with open(directory + "/config-schema.json") as f:
    root = json.load(f)
resolver = jsonschema.RefResolver(base_uri="file://" + directory + "/", referrer=root)
validator = jsonschema.Draft4Validator(root, resolver=resolver)
out = []
for doc in json.load(sys.stdin):
    fields = []
    for error in validator.iter_errors(doc):
        path = ""
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
        fields.append(path)
    out.append(fields)
json.dump(out, sys.stdout)
"""


def _jsonschema_available() -> None:
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import jsonschema"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("Debian's python3-jsonschema is not installed (Makefile APT_PACKAGES)")
    if not Path(spec.SCHEMA_DIR, "config-schema.json").exists():
        pytest.skip(f"the runtime-spec schemas are not installed ({spec.SCHEMA_PACKAGE})")


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, i))


def _wrong(value: Any) -> list[Any]:
    """Values of other JSON types than `value`'s, and edge values of its own type."""
    if isinstance(value, bool):
        return ["true", 1]
    if isinstance(value, int):
        return ["1", -1, 1.5, 2**32, True]
    if isinstance(value, str):
        return [1, None, ""]
    if isinstance(value, list):
        return [{}, "x", []]
    if isinstance(value, dict):
        return [[], 1, {}]
    return [1]


def _mutants() -> list[dict[str, Any]]:
    base = spec.default()
    base["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 10}]
    base["linux"]["resources"]["memory"] = {"limit": 1 << 20, "swap": -1}
    base["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]}
        ],
    }
    base["hooks"] = {"poststop": [{"path": "/bin/true", "timeout": 5}]}
    docs = [base]
    for path, value in _leaves(base):
        if not path:
            continue
        for wrong in _wrong(value):
            doc = copy.deepcopy(base)
            node = doc
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = wrong
            docs.append(doc)
        if isinstance(path[-1], str):
            doc = copy.deepcopy(base)
            node = doc
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
            docs.append(doc)
    return docs


def test_same_verdicts_as_jsonschema() -> None:
    _jsonschema_available()
    docs = _mutants()
    judged = subprocess.run(
        [SYSTEM_PYTHON, "-c", JUDGE, spec.SCHEMA_DIR],
        input=json.dumps(docs),
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    verdicts = json.loads(judged)
    assert len(verdicts) == len(docs) > 200
    rejected = 0
    for doc, fields in zip(docs, verdicts, strict=True):
        try:
            schema.validate(doc)
        except InvalidSpecError as exc:
            rejected += 1
            assert exc.field is not None
            assert fields, f"isola rejected ({exc.message}) what jsonschema accepts: {json.dumps(doc)[:300]}"
            # jsonschema blames a missing property on its parent object; isola names the property itself
            parent_blamed = any(exc.field.startswith(f) for f in fields if f)
            root_blamed = "" in fields and "." not in exc.field and exc.message.endswith("is required")
            assert exc.field in fields or parent_blamed or root_blamed, (exc.field, fields)
        else:
            assert not fields, f"isola accepted what jsonschema rejects at {fields}"
    assert rejected > 100
