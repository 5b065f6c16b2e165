"""The home directory: where `aios up` keeps data, logs, config and the files other processes read."""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

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


class HomeError(Exception):
    """The home cannot be used (not creatable, not writable, a lock naming no process)."""


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
    def agents_dir(self) -> Path:
        """One `NAME.token` file per agent of the operator's config."""
        return self.root / "agents"

    @property
    def lock_file(self) -> Path:
        """Locked (flock) by the live supervisor, which writes its pid in it; the kernel drops the
        lock when that process dies, even by SIGKILL, so a held lock means a live supervisor."""
        return self.root / "supervisor.lock"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    def prepare(self) -> None:
        """Create the home and its logs folder; HomeError (one line) if the path cannot be one."""
        try:
            for d in (self.root, self.logs):
                d.mkdir(parents=True, exist_ok=True)
            self.lock_file.touch()
        except OSError as exc:
            raise HomeError(f"cannot use {self.root} as the AIOS home: {exc.strerror or exc}") from exc

    def lock(self, wait_s: float = 1.0) -> IO[str] | None:
        """Take the supervisor lock (the open file holds it) and write our pid; None if it is held."""
        f = open(self.lock_file, "a+")  # noqa: SIM115 (held open as long as the supervisor runs)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # `lock_holder` takes a shared lock for an instant: wait a little before giving up.
                if time.monotonic() > deadline:
                    f.close()
                    return None
                time.sleep(0.02)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        return f

    def lock_holder(self) -> int | None:
        """The pid of the live supervisor of this home, None if there is none."""
        try:
            f = open(self.lock_file)  # noqa: SIM115
        except OSError:
            return None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                return None  # nobody holds it (released when `f` closes)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # a supervisor writes its pid right after locking
                f.seek(0)
                text = f.read().strip()
                if text.isdigit() and int(text) > 0:
                    return int(text)
                time.sleep(0.02)
        raise HomeError(f"{self.lock_file} is locked but names no process")

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
