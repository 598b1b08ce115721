"""`python -m isola.platform.daemon`: isolad, or `--openapi FILE` to write its OpenAPI document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from isola.platform.daemon.app import openapi_document
from isola.platform.daemon.server import main

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--openapi":
        Path(sys.argv[2]).write_text(json.dumps(openapi_document(), indent=2) + "\n")
    else:
        main()
