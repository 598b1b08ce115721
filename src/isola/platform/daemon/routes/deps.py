"""What every route depends on: the platform the daemon serves, and the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from isola.platform.access import Caller
from isola.platform.daemon.auth import caller
from isola.platform.service import Platform


def platform(request: Request) -> Platform:
    found: Platform = request.app.state.platform
    return found


PlatformDep = Annotated[Platform, Depends(platform)]
CallerDep = Annotated[Caller, Depends(caller)]
