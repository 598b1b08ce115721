"""`python -m isola.vmm.api --openapi [FILE]`: export the API's OpenAPI document (to stdout without FILE).

python -m isola.vmm.api --openapi docs/openapi/isola-vmm.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isola.vmm import launch
from isola.vmm.api import Controller, create_app


def openapi_document() -> dict[str, Any]:
    """The document of the application `isola-vmm --api-sock` serves (the controller plays no part in it)."""
    return create_app(Controller(launch.boot)).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m isola.vmm.api", description=__doc__.splitlines()[0])
    parser.add_argument("--openapi", nargs="?", const="-", metavar="FILE", required=True,
                        help="write the OpenAPI document to FILE (default: stdout)")  # fmt: skip
    args = parser.parse_args(argv)
    text = render(openapi_document())
    if args.openapi == "-":
        sys.stdout.write(text)
        return 0
    try:
        Path(args.openapi).write_text(text)
    except OSError as exc:
        print(f"isola.vmm.api: cannot write {args.openapi}: {exc.strerror}", file=sys.stderr)
        return 73
    return 0


if __name__ == "__main__":
    sys.exit(main())
