"""The Python client of isolad: httpx over its unix socket (or TCP), errors raised as the daemon's isola errors.

An error answer carries its isola error class by name (`type`), so `client.get_instance("x")` raises the
same `NotFoundError` the daemon raised, with the same message, hint and field, and the CLI maps it to the same
exit code as a local failure. The console is a WebSocket (`console()`, from the `websockets` package, which
speaks over unix sockets too).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect, unix_connect

from isola import errors

HOST = "isolad"
"""The Host header on the unix socket; only TCP needs a real one."""


class Client:
    """`Client(socket_path, token)`; `Client.tcp("http://127.0.0.1:7070", token)`. A token acts as its
    tenant; no token on the unix socket is the admin (root)."""

    def __init__(
        self,
        socket: Path | None = None,
        token: str | None = None,
        *,
        url: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        if (socket is None) == (url is None):
            raise errors.UsageError("give isolad's unix socket or its URL, not both")
        self.socket = socket
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(uds=str(socket)) if socket is not None else None
        self.base_url = url.rstrip("/") if url else f"http://{HOST}"
        self._http = httpx.Client(transport=transport, base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def tcp(cls, url: str, token: str | None) -> Client:
        return cls(url=url, token=token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the wire ----------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, *, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """One request; the decoded JSON answer (None for 204), or the daemon's error raised here."""
        response = self._send(method, path, body, params)
        if response.status_code == 204:
            return None
        doc = _decoded(response)
        if response.is_success:
            return doc
        raise error_from(response.status_code, doc)

    def call_lines(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """A GET answered with JSON lines: one decoded value per line."""
        response = self._send("GET", path, None, params)
        if not response.is_success:
            raise error_from(response.status_code, _decoded(response))
        return [json.loads(line) for line in response.text.splitlines() if line]

    def _send(self, method: str, path: str, body: Any, params: Mapping[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, path, json=body, params=params)
        except httpx.TransportError as err:  # not running, died mid-request, timed out
            where = self.socket or self.base_url
            raise errors.UnsupportedError(
                f"isolad did not answer at {where}: {err or type(err).__name__}",
                hint="is it running? `isola daemon status`; its log: $ISOLA_HOME/isolad.log",
            ) from None

    # -- system, tenants -----------------------------------------------------------------------------------

    def system(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/system")
        return result

    def create_tenant(self, name: str, quotas: Mapping[str, int | None] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/v1/tenants", body={"name": name, "quotas": dict(quotas or {})})
        return result

    def tenants(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/tenants")
        return result

    def tenant(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/tenants/{ref}")
        return result

    def set_quotas(self, ref: str, quotas: Mapping[str, int | None]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("PATCH", f"/v1/tenants/{ref}/quotas", body=dict(quotas))
        return result

    def rotate_token(self, ref: str) -> str:
        token: str = self.call("POST", f"/v1/tenants/{ref}/token")["token"]
        return token

    def delete_tenant(self, ref: str) -> None:
        self.call("DELETE", f"/v1/tenants/{ref}")

    # -- instances -----------------------------------------------------------------------------------------

    def create_instance(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/v1/instances", body=dict(spec))
        return result

    def instances(self, tenant: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/instances", params={"tenant": tenant} if tenant else None)
        return result

    def instance(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/instances/{ref}")
        return result

    def action(self, ref: str, action: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """`start`, `stop` ({timeout_s}), `kill` ({signal}), `resize` ({vcpus, memory_mib, disk_gib})."""
        result: dict[str, Any] = self.call(
            "POST", f"/v1/instances/{ref}/{action}", body=dict(body) if body is not None else None
        )
        return result

    def delete_instance(self, ref: str, *, force: bool = False) -> None:
        self.call("DELETE", f"/v1/instances/{ref}", params={"force": "true"} if force else None)

    def logs(self, ref: str, tail_bytes: int = 65536) -> bytes:
        doc = self.call("GET", f"/v1/instances/{ref}/logs", params={"tail_bytes": tail_bytes})
        return base64.b64decode(doc["data_base64"])

    def stats(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/instances/{ref}/stats")
        return result

    def exec(self, ref: str, argv: list[str], env: Mapping[str, str] | None = None) -> tuple[int, bytes, bytes]:
        doc = self.call("POST", f"/v1/instances/{ref}/exec", body={"argv": argv, "env": dict(env or {})})
        return doc["exit_code"], base64.b64decode(doc["stdout_base64"]), base64.b64decode(doc["stderr_base64"])

    def console(self, ref: str) -> ClientConnection:
        """The console's WebSocket: send and receive bytes; a refusal arrives as one text frame (the error
        body), which `console_error` turns into the isola error."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        path = f"/v1/instances/{ref}/console"
        try:
            if self.socket is not None:
                return unix_connect(str(self.socket), f"ws://{HOST}{path}", additional_headers=headers)
            return connect(self.base_url.replace("http", "ws", 1) + path, additional_headers=headers)
        except OSError as err:
            raise errors.UnsupportedError(f"isolad is not answering at {self.socket or self.base_url}: {err}") from None

    # -- leases --------------------------------------------------------------------------------------------

    def lease(self, host: str, tenant: str, until: str | None = None, *, drain: bool = False) -> dict[str, Any]:
        body = {"host": host, "tenant": tenant, "until": until, "drain": drain}
        result: dict[str, Any] = self.call("POST", "/v1/leases", body=body)
        return result

    def leases(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/leases")
        return result

    def get_lease(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/leases/{ref}")
        return result

    def release(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/v1/leases/{ref}/release")
        return result

    # -- networks ------------------------------------------------------------------------------------------

    def create_network(self, name: str, subnet: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        body = {"name": name, "subnet": subnet, "tenant": tenant}
        result: dict[str, Any] = self.call("POST", "/v1/networks", body=body)
        return result

    def networks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/networks")
        return result

    def network(self, ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/v1/networks/{ref}")
        return result

    def delete_network(self, ref: str) -> None:
        self.call("DELETE", f"/v1/networks/{ref}")

    # -- events --------------------------------------------------------------------------------------------

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """The caller's instance and lease events with an id above `since`, oldest first."""
        return self.call_lines("/v1/events", {"since": since})

    # -- hosts, scheduler ----------------------------------------------------------------------------------

    def hosts(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", "/v1/hosts")
        return result

    def schedule(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/v1/schedule", body=dict(spec))
        return result


def _decoded(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"error": response.text or response.reason_phrase}


def error_from(status: int, doc: Any) -> errors.IsolaError:
    """The isola error an answer describes: its class by name when it is one of isola's, else by status."""
    if not isinstance(doc, dict):
        doc = {"error": str(doc)}
    message = str(doc.get("error") or f"isolad answered {status}")
    hint = doc.get("hint")
    cls = getattr(errors, str(doc.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.IsolaError)):
        cls = _BY_STATUS.get(status, errors.IsolaError)
    field = doc.get("field")
    if issubclass(cls, errors.InvalidSpecError):
        return cls(message.removeprefix(f"{field}: ") if field else message, field=field, hint=hint)
    return cls(message, hint=hint)


_BY_STATUS: dict[int, type[errors.IsolaError]] = {
    400: errors.UsageError,
    403: errors.PermissionDeniedError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    422: errors.InvalidSpecError,
    501: errors.UnsupportedError,
}
