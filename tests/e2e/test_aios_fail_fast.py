"""End to end: `aios` fails fast and cleanly: a bad config or home is one line naming the key or the
path, exit code 2, nothing started; Ctrl-C during `aios up` (foreground or --detach) stops what
started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aios_services.cli.home import Home
from aios_services.cli.stack import scan
from tests.e2e.helpers import aios, clean_env, wait_until

pytestmark = pytest.mark.e2e


def nothing_started(home: Path) -> bool:
    h = Home.resolve(home)
    return scan(h) == [] and h.lock_holder() is None and not h.state_file.exists()


@pytest.mark.parametrize(
    ("config", "args", "expected"),
    [
        (
            '[models."llama3:8b"]\nbackends = [{ name = "a", base_url = "http://h:1/v1", slots = -1 }]\n',
            [],
            'aios.toml: models."llama3:8b".backends.0.slots: Input should be greater than or equal to 1',
        ),
        ('[scheduler]\npolcy = "rr"\n', [], "aios.toml: scheduler.polcy: unknown key"),
        (
            "[models.x\n",
            [],
            "aios.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 1",
        ),
        ("", ["--policy", "bogus"], "--policy: unknown policy 'bogus'; one of fifo, rr, priority, las"),
    ],
)
def test_bad_config_fails_the_start(tmp_path: Path, config: str, args: list[str], expected: str) -> None:
    home = tmp_path / "home"
    (tmp_path / "aios.toml").write_text(config)  # beside the home: the default config
    up = aios(home, "up", "--detach", *args)
    assert up.returncode == 2, up.stdout + up.stderr
    assert expected in " ".join(up.stderr.split()), up.stderr
    assert "Traceback" not in up.stderr
    assert nothing_started(home)


def test_impossible_home_and_port(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("")
    for home, why in ((regular / "home", "Not a directory"), (Path("/proc/aios-home"), "")):
        up = aios(home, "up", "--detach")
        assert up.returncode == 2 and "cannot use" in up.stderr and why in up.stderr, up.stderr
        assert "Traceback" not in up.stderr
    sim = aios(None, "sim", "--port", "-5")
    assert sim.returncode == 2 and "'-5' is not a port" in sim.stderr and "Traceback" not in sim.stderr
    down = aios(tmp_path / "never", "down")
    assert down.returncode == 0 and "not running" in down.stdout


def started_something(home: Path) -> bool:
    try:
        return bool(json.loads((home / "state.json").read_text())["processes"])
    except (OSError, ValueError, KeyError):
        return False


def stopped(pid: int) -> bool:
    """The process is stopped (state T in /proc), or gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("T", "t", "Z", "X")


def interrupt_while_starting(home: Path, up: subprocess.Popen[bytes]) -> bool:
    """Ctrl-C `up` once its first process runs, with the supervisor frozen (SIGSTOP) meanwhile, so
    that the stack cannot finish starting before the signal lands, however the machine schedules.
    False if it had already finished (this test process was not scheduled in time): try again."""
    wait_until("the first process", lambda: started_something(home) or up.poll() is not None)
    state = json.loads((home / "state.json").read_text())
    supervisor = int(state["supervisor_pid"])
    os.kill(supervisor, signal.SIGSTOP)
    try:
        # SIGSTOP lands asynchronously: only once the kernel shows it stopped can it write no more.
        wait_until("the supervisor stopped", lambda: stopped(supervisor))
        if json.loads((home / "state.json").read_text())["status"] != "starting":
            return False
        up.send_signal(signal.SIGINT)
    finally:
        os.kill(supervisor, signal.SIGCONT)
    return True


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
def test_ctrl_c_during_up_stops_what_started(tmp_path: Path, detach: bool) -> None:
    for attempt in range(3):
        home = tmp_path / f"home{attempt}"
        argv = [sys.executable, "-m", "aios_services.cli.main", "up", "--home", str(home)]
        with open(tmp_path / "up.log", "wb") as log:
            # As from a terminal: SIGINT not ignored, even when this suite runs in a background job
            # (which a shell starts with SIGINT ignored, and children inherit that).
            up = subprocess.Popen(
                [*argv, *(["--detach"] if detach else [])],
                stdout=log,
                stderr=log,
                env=clean_env(),
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        try:
            interrupted = interrupt_while_starting(home, up)
            if interrupted:
                code = up.wait(timeout=60)
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGINT)
                try:
                    up.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    up.kill()
            aios(home, "down")  # whatever the outcome, leave nothing behind
        if interrupted:
            break
    else:
        pytest.fail("the stack was always up before the test could interrupt it")
    output = (tmp_path / "up.log").read_text()
    assert code == 130, output  # interrupted while starting, not after
    assert "Traceback" not in output
    assert nothing_started(home), output
