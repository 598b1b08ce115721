"""The one exception hierarchy of isola, and the one place it is mapped to exit codes and HTTP statuses.

Every failure a user can cause (bad input, a missing host feature, an unreachable mirror) is raised as one of
these classes with a message written for that user. The CLI and the daemon catch `IsolaError` at their edge
and turn it into an exit code or an HTTP status through `exit_code()` / `http_status()`; nothing else in the
code base chooses those numbers. Anything that is *not* an `IsolaError` is a bug in isola.

    IsolaError
    ├── UsageError               the request itself is wrong (bad option, bad value)
    │   └── InvalidSpecError     a document (config, spec, manifest) fails validation; names the field
    ├── FormatError              a file's bytes are not what they claim (malformed ELF, corrupt image, bad cpio)
    ├── NotFoundError            a named thing does not exist
    ├── ConflictError            it exists already, or is in a state that forbids the operation
    ├── PermissionDeniedError    the caller may not do this (not root, wrong tenant)
    ├── QuotaExceededError       the tenant's quota does not allow it
    ├── UnsupportedError         this host cannot do it (no KVM, no cgroup controller); says why
    ├── AssetError               guest assets from the Debian archive
    │   ├── MirrorUnreachableError
    │   └── ChecksumError
    ├── StoreError               the state store is unusable (corrupt, newer schema than this isola)
    └── EngineError              an engine failed to run a guest (the guest's own failure is not an error)
"""

from __future__ import annotations

import os


class IsolaError(Exception):
    """Base of every error isola reports to a user. `str(err)` is the one line shown to that user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(IsolaError):
    pass


class InvalidSpecError(UsageError):
    """A document failed validation. `field` is a dotted path such as ``process.args[0]``."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, hint=hint)
        self.field = field


class FormatError(IsolaError):
    pass


class NotFoundError(IsolaError):
    pass


class ConflictError(IsolaError):
    pass


class PermissionDeniedError(IsolaError):
    pass


class QuotaExceededError(IsolaError):
    pass


class UnsupportedError(IsolaError):
    pass


class AssetError(IsolaError):
    pass


class MirrorUnreachableError(AssetError):
    pass


class ChecksumError(AssetError):
    pass


class StoreError(IsolaError):
    pass


class EngineError(IsolaError):
    pass


# Exit codes follow sysexits.h where one fits, so scripts can tell "you asked wrongly" (64/65) from
# "this host can't" (69) from "try again" (75). HTTP statuses are what the daemon answers.
_STATUS: dict[type[IsolaError], tuple[int, int]] = {
    IsolaError: (1, 500),
    UsageError: (os.EX_USAGE, 400),
    InvalidSpecError: (os.EX_DATAERR, 422),
    FormatError: (os.EX_DATAERR, 422),
    NotFoundError: (os.EX_NOINPUT, 404),
    ConflictError: (os.EX_CANTCREAT, 409),
    PermissionDeniedError: (os.EX_NOPERM, 403),
    QuotaExceededError: (os.EX_NOPERM, 403),
    UnsupportedError: (os.EX_UNAVAILABLE, 501),
    AssetError: (os.EX_SOFTWARE, 500),
    MirrorUnreachableError: (os.EX_TEMPFAIL, 503),
    ChecksumError: (os.EX_DATAERR, 502),
    StoreError: (os.EX_SOFTWARE, 500),
    EngineError: (os.EX_SOFTWARE, 500),
}


def _lookup(err: IsolaError) -> tuple[int, int]:
    for cls in type(err).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return _STATUS[IsolaError]


def exit_code(err: IsolaError) -> int:
    """The process exit status for `err`."""
    return _lookup(err)[0]


def http_status(err: IsolaError) -> int:
    """The HTTP status the daemon answers with for `err`."""
    return _lookup(err)[1]
