"""docs/openapi/isolad.json is the daemon's document, and it promises isola's error body."""

from __future__ import annotations

import json
from pathlib import Path

from isola.platform.daemon.app import openapi_document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "isolad.json"


def test_the_exported_document_is_the_apps() -> None:
    assert json.loads(DOCUMENT.read_text()) == openapi_document(), (
        "docs/openapi/isolad.json is stale: python -m isola.platform.daemon --openapi docs/openapi/isolad.json"
    )


def test_every_error_answer_is_isolas_error_body() -> None:
    doc = openapi_document()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
