"""isola-vmm's REST API: Firecracker's endpoints on a unix socket (`isola-vmm --api-sock PATH`).

    models      the request and response bodies (pydantic), named like Firecracker's
    controller  the configuration, the VM thread, the state machine and the metrics file; no HTTP
    app         the FastAPI application over a controller: routes, and every error as 400 + fault_message
    server      the unix socket, uvicorn, signals, the socket file's removal

The OpenAPI document is exported to docs/openapi/isola-vmm.json (`python -m isola.vmm.api --openapi FILE`);
a test fails when it and the application differ. This package imports FastAPI, so `isola.vmm.launch` imports
it only when --api-sock is given: a plain `--config` boot does not pay for it.
"""

from isola.vmm.api.app import create_app
from isola.vmm.api.controller import Controller
from isola.vmm.api.server import serve

__all__ = ["Controller", "create_app", "serve"]
