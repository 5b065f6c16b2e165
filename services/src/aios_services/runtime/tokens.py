"""Agent tokens: random secrets made by `aios up`. An agent's token is its NATS password (the
server keeps only its bcrypt hash, runtime/natsauth.py); nothing else stores or checks it."""

from __future__ import annotations

import secrets


def new_token() -> str:
    return "aios_" + secrets.token_urlsafe(32)
