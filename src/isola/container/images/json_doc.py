"""Parsing the JSON documents of an image (index, manifest, config) into plain dicts, with errors that say
which document and which field is wrong."""

from __future__ import annotations

import json
from typing import Any

from isola.errors import FormatError


def parse(data: bytes, what: str) -> dict[str, Any]:
    """`data` as a JSON object, or one FormatError naming `what`."""
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


def field(doc: dict[str, Any], name: str, kind: type, what: str) -> Any:
    """`doc[name]`, which must be present and of `kind`."""
    value = doc.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise FormatError(f"{what}: field {name!r} must be a {kind.__name__}")
    return value
