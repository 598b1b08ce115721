"""Checking a config.json against the OCI runtime-spec's own JSON Schema files.

The schemas are read from Debian's `golang-github-opencontainers-specs-dev` package (the runtime-spec's `schema/`
directory), so the rules are the spec's, not a copy of them. They use a small part of JSON Schema draft 4 —
`type`, `$ref` across files, `properties`, `patternProperties`, `additionalProperties`, `items`, `required`,
`enum`, `pattern`, `minimum`, `maximum`, `minItems`, `allOf`, `anyOf` — which this module interprets in a few
dozen lines: the `jsonschema` library costs 60-80 ms to import, three times a whole `runc run`, and every
`isola-oci create` validates. tests/container/test_oci_schema.py holds it to Debian's python3-jsonschema.

The first violation is reported with the path of the offending field (`process.args`, `mounts[2].destination`).
"""

from __future__ import annotations

import json
import os
import re

from isola.container.oci.spec import SCHEMA_DIR
from isola.container.oci.spec import SCHEMA_PACKAGE as PACKAGE
from isola.errors import InvalidSpecError, UnsupportedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing, which costs ~2 ms
if TYPE_CHECKING:
    from typing import Any

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # draft 4: 1.0 is a number but not an integer; booleans are neither
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


class Schemas:
    """The schema files of one directory, loaded on first use and resolved by `$ref`."""

    def __init__(self, directory: str = SCHEMA_DIR) -> None:
        self.directory = directory
        self._files: dict[str, Any] = {}

    def load(self, name: str) -> Any:
        if name not in self._files:
            path = os.path.join(self.directory, name)
            try:
                with open(path) as f:
                    self._files[name] = json.load(f)
            except FileNotFoundError:
                raise UnsupportedError(
                    f"the OCI runtime-spec schema {path} is missing", hint=f"apt-get install {PACKAGE}"
                ) from None
        return self._files[name]

    def resolve(self, ref: str, current: str) -> tuple[Any, str]:
        """The schema a `$ref` points at, and the file it lives in (for the refs inside it)."""
        file, _, pointer = ref.partition("#")
        file = file or current
        node = self.load(file)
        for key in pointer.strip("/").split("/") if pointer.strip("/") else []:
            node = node[key]
        return node, file


class _Violation(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _join(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def _check(schemas: Schemas, schema: Any, file: str, value: Any, field: str) -> None:
    if "$ref" in schema:
        target, target_file = schemas.resolve(schema["$ref"], file)
        _check(schemas, target, target_file, value, field)
        return
    kinds = schema.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[name](value) for name in names):
            raise _Violation(field, f"must be of type {' or '.join(names)}, not {_json_type(value)}")
    if "enum" in schema and value not in schema["enum"]:
        raise _Violation(field, f"{json.dumps(value)} is not one of {', '.join(map(json.dumps, schema['enum']))}")
    for sub in schema.get("allOf", ()):
        _check(schemas, sub, file, value, field)
    if "anyOf" in schema:
        errors = []
        for sub in schema["anyOf"]:
            try:
                _check(schemas, sub, file, value, field)
                break
            except _Violation as exc:
                errors.append(exc)
        else:
            raise errors[0]
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        raise _Violation(field, f"{json.dumps(value)} does not match {schema['pattern']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise _Violation(field, f"{value} is less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _Violation(field, f"{value} is greater than the maximum {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise _Violation(field, f"needs at least {schema['minItems']} item(s)")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(schemas, schema["items"], file, item, _join(field, i))
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                raise _Violation(_join(field, key), "is required")
        properties = schema.get("properties", {})
        patterns = schema.get("patternProperties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            matched = False
            if key in properties:
                matched = True
                _check(schemas, properties[key], file, item, _join(field, key))
            for pattern, sub in patterns.items():
                if re.search(pattern, key):
                    matched = True
                    _check(schemas, sub, file, item, _join(field, key))
            if not matched and isinstance(extra, dict):
                _check(schemas, extra, file, item, _join(field, key))
            elif not matched and extra is False:
                raise _Violation(_join(field, key), "is not allowed here")


def _json_type(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


def validate(
    document: Any, ref: str = "config-schema.json", *, prefix: str = "", schemas: Schemas | None = None
) -> None:
    """Raise InvalidSpecError naming the first field of `document` that the schema at `ref` (a file, optionally
    with a #/json/pointer into it) rejects; `prefix` is where `document` sits in a config.json."""
    schemas = schemas or Schemas()
    try:
        schema, file = schemas.resolve(ref, ref.partition("#")[0])
        _check(schemas, schema, file, document, prefix)
    except _Violation as exc:
        raise InvalidSpecError(exc.message, field=exc.field or "config.json") from None
