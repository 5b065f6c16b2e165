"""The web console at `/ui`: see and steer the agents, live, in a browser (served by the gateway,
protected by the operator's console token, its assets bundled in `static/`)."""

from .app import mount

__all__ = ["mount"]
