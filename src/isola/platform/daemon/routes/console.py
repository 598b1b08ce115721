"""`WS /v1/instances/{ref}/console`: the guest's console, bridged to the engine's console socket.

Binary frames carry the console's bytes both ways. A refusal (no such instance, not running, a bad token) is
one text frame holding the error body every other route answers with, then a close with code 4000 + the
HTTP status (4404, 4409, …), so a client tells the two apart without guessing. When the guest ends, its
console socket closes and so does the WebSocket (code 1000).
"""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from isola.errors import IsolaError, http_status
from isola.platform.daemon.auth import caller
from isola.platform.daemon.errors import error_body
from isola.platform.service import Platform

router = APIRouter(tags=["instances"])

CHUNK = 65536


@router.websocket("/v1/instances/{ref}/console")
async def console(websocket: WebSocket, ref: str) -> None:
    platform: Platform = websocket.app.state.platform
    await websocket.accept()
    try:
        who = await asyncio.to_thread(caller, websocket)
        path = await asyncio.to_thread(platform.instances.console, who, ref)
        reader, writer = await asyncio.open_unix_connection(path)
    except IsolaError as err:
        await _refuse(websocket, err)
        return
    except OSError as err:
        await _refuse(websocket, IsolaError(f"the console of '{ref}' is gone: {err.strerror}"))
        return
    try:
        await _bridge(websocket, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _refuse(websocket: WebSocket, err: IsolaError) -> None:
    await websocket.send_json(error_body(err))
    await websocket.close(code=4000 + http_status(err), reason=type(err).__name__)


async def _bridge(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async def guest_to_client() -> None:
        while data := await reader.read(CHUNK):
            await websocket.send_bytes(data)

    async def client_to_guest() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(guest_to_client()), asyncio.create_task(client_to_guest())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in (*done, *pending):
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError):
            await task
    with contextlib.suppress(RuntimeError, OSError):
        await websocket.close(code=1000)
