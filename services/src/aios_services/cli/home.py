"""The home directory: where `aios up` keeps data, logs, config and the files other processes read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from aios_schemas import CONNECTION_FILE

ProcessKind = Literal["server", "service", "backend"]
StateStatus = Literal["starting", "ready", "stopping", "failed"]


class ProcessInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Process name (nats, s3, scheduler, llm, sim, local-model).")
    kind: ProcessKind = Field(description="What the process is.")
    pid: int = Field(description="OS process id.")
    address: str | None = Field(None, description="Where it listens, if it does.")
    restarts: int = Field(0, description="Times the supervisor restarted it.")


class State(BaseModel):
    """`state.json`: written by the supervisor, read by `aios status` and `aios down`."""

    model_config = ConfigDict(extra="forbid")
    supervisor_pid: int
    status: StateStatus
    started: float
    home: str
    nats_url: str
    processes: list[ProcessInfo] = Field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None) -> Home:
        root = Path(home or os.environ.get("AIOS_HOME") or Path.cwd() / ".aios").resolve()
        return cls(root)

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def connection_file(self) -> Path:
        return self.root / CONNECTION_FILE

    @property
    def tokens_file(self) -> Path:
        return self.root / "tokens.json"

    @property
    def llm_config(self) -> Path:
        return self.root / "llm.toml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    def read_state(self) -> State | None:
        try:
            return State.model_validate_json(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, state: State) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self.state_file)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
