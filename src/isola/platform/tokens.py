"""Tenant API tokens: made here, shown once, stored only as a hash.

A token is 32 random bytes, so a plain SHA-256 is enough to store it (no salt or slow hash needed: there is
no dictionary to attack), and lets the daemon find the tenant by an indexed lookup of the hash. The prefix
makes a leaked token recognisable in logs and by secret scanners.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "isola_"


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()
