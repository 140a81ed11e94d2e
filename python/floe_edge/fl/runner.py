"""Running the Flower app on this machine: the simulation runtime (a SuperLink in simulation mode that this module
starts and stops itself, so no detached "managed" SuperLink is left behind) or a real deployment on loopback
(`flower-superlink` + one `flower-supernode` per client), each driven by `flwr run`. Flower's own CLIs do the work;
this module writes the app's pyproject.toml and a private FLWR_HOME, picks free ports, starts and stops the
processes (each in its own process group, ended by its id) and waits with bounded timeouts."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Optional

from .settings import RunSettings, app_pyproject

__all__ = ["FlRunError", "Federation", "free_port", "run_deployment", "run_simulation"]


class FlRunError(RuntimeError):
    """A Flower process that did not start, a run that failed or timed out: the message says where the logs are."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> str:
    """A Flower console script: beside this Python first (a venv that is not activated), then on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FlRunError(f"{name} not found: install the fl extra (bash tools/setup.sh fl)")
    return found


@dataclass
class Federation:
    """The processes of one local federation and where they log."""

    out_dir: Path
    env: dict[str, str]
    superlink_port: int = 0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    @classmethod
    def create(cls, out_dir: Path, settings: RunSettings) -> "Federation":
        out_dir.mkdir(parents=True, exist_ok=True)
        home = out_dir / "flwr-home"
        home.mkdir(exist_ok=True)
        # Flower's processes start its other console scripts by name: this Python's bin first on PATH
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**os.environ, "PATH": path, "FLWR_HOME": str(home), "FLWR_DISABLE_UPDATE_CHECK": "1",
               "FLWR_TELEMETRY_ENABLED": "0"}
        (out_dir / "app").mkdir(exist_ok=True)
        (out_dir / "app" / "pyproject.toml").write_text(app_pyproject(settings), encoding="utf-8")
        return cls(out_dir, env)

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen:
        log = open(self.out_dir / f"{name}.log", "ab")
        self.logs.append(log)
        proc = subprocess.Popen(list(argv), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # own group: ends with its children
        self.processes[name] = proc
        return proc

    def start_superlink(self, simulation: bool) -> None:
        self.superlink_port = free_port()
        argv = [_tool("flower-superlink"), "--insecure", "--isolation", "subprocess", "--host", "127.0.0.1",
                "--port", str(self.superlink_port), "--database", str(self.out_dir / "superlink.db")]
        self.start("superlink", argv + (["--simulation"] if simulation else []))
        self._wait_health("superlink", self.superlink_port)
        (Path(self.env["FLWR_HOME"]) / "config.toml").write_text(
            f'[superlink]\ndefault = "floe"\n\n[superlink.floe]\naddress = "127.0.0.1:{self.superlink_port}"\n'
            'insecure = true\n', encoding="utf-8")

    def start_supernode(self, name: str, node_config: Mapping[str, object]) -> None:
        config = " ".join(f"{k}={json.dumps(v)}" for k, v in node_config.items())
        self.start(name, [_tool("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{self.superlink_port}",
                          "--isolation", "subprocess", "--port", str(free_port()), "--node-config", config])

    def _wait_health(self, name: str, port: int, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                raise FlRunError(f"{name} exited with code {self.processes[name].returncode}; see "
                                 f"{self.out_dir / (name + '.log')}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise FlRunError(f"{name} not ready within {timeout:.0f} s; see {self.out_dir / (name + '.log')}")

    def run(self, federation_config: Optional[str], timeout: float,
            echo: Optional[Callable[[str], None]] = None) -> int:
        """`flwr run` of the app with its logs streamed (echoed line by line); the run id."""
        argv = [_tool("flwr"), "run", str(self.out_dir / "app"), "floe", "--stream"]
        if federation_config:
            argv += ["--federation-config", federation_config]
        proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True)
        self.processes["flwr-run"] = proc
        deadline, run_id = time.monotonic() + timeout, 0
        with open(self.out_dir / "run.log", "a", encoding="utf-8") as log:
            assert proc.stdout is not None
            for line in proc.stdout:  # ends when the run ends (the stream closes) or the process is stopped
                log.write(line)
                if echo:
                    echo(line.rstrip("\n"))
                found = re.search(r"started run (\d+)", line)
                run_id = int(found.group(1)) if found and not run_id else run_id
                if time.monotonic() > deadline:
                    _end(proc)
                    raise FlRunError(f"the run did not finish within {timeout:.0f} s; see {self.out_dir}")
        if proc.wait() != 0 or not run_id:
            raise FlRunError(f"flwr run failed (exit {proc.returncode}); see {self.out_dir / 'run.log'}")
        return run_id

    def status(self, run_id: int) -> str:
        """The run's status as `flwr ls` reports it (e.g. "finished:completed")."""
        out = subprocess.run([_tool("flwr"), "ls", "floe", "--run-id", str(run_id), "--format", "json"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        try:
            runs = json.loads(out.stdout)["runs"]
            return str(runs[0]["status"])
        except (ValueError, KeyError, IndexError, TypeError):
            return f"unknown ({out.stdout.strip() or out.stderr.strip()})"

    def stop(self) -> None:
        """End every process started here and all their descendants: the SuperLink starts flower-superexec and
        that the simulation runtime (with Ray) detached in sessions of their own, which its group does not hold."""
        groups = {os.getpgid(pid) for proc in self.processes.values() for pid in _descendants(proc.pid)
                  if _alive(pid)} - {os.getpgrp()}
        for name in reversed(list(self.processes)):
            _end(self.processes[name])
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM:
                time.sleep(3.0)
        for log in self.logs:
            log.close()


def _descendants(root: int) -> list[int]:
    """`root` and the processes below it (from /proc: parent links), while they run."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _alive(pid: int) -> bool:
    try:
        os.getpgid(pid)
        return True
    except ProcessLookupError:
        return False


def _end(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process's own group (started with start_new_session), SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_simulation(settings: RunSettings, out_dir: Path, timeout: float = 3600.0, cpus_per_client: int = 2,
                   echo: Optional[Callable[[str], None]] = None) -> tuple[int, str]:
    """The federation on Flower's simulation runtime: one virtual SuperNode per client, each ClientApp given
    `cpus_per_client` CPUs (2 on this 2-core machine: one client trains at a time, all of its memory at once).
    Returns (run id, status)."""
    fed = Federation.create(out_dir, settings)
    try:
        fed.start_superlink(simulation=True)
        run_id = fed.run(f"num-supernodes={len(settings.specs())} client-resources-num-cpus={cpus_per_client} "
                         f"init-args-num-cpus={cpus_per_client}", timeout, echo)
        return run_id, fed.status(run_id)
    finally:
        fed.stop()


def run_deployment(settings: RunSettings, out_dir: Path, timeout: float = 3600.0,
                   echo: Optional[Callable[[str], None]] = None,
                   during: Optional[Callable[[Federation], None]] = None) -> tuple[int, str]:
    """The federation as a real deployment on 127.0.0.1: a SuperLink and one SuperNode per client (node config
    partition-id), then `flwr run`. `during` (tests: kill a SuperNode mid-round) runs in a thread once the run
    starts. Returns (run id, status)."""
    import threading

    fed = Federation.create(out_dir, settings)
    specs = settings.specs()
    try:
        fed.start_superlink(simulation=False)
        for i in range(len(specs)):
            fed.start_supernode(f"supernode-{i}", {"partition-id": i, "num-partitions": len(specs)})
        if during:
            threading.Thread(target=during, args=(fed,), daemon=True).start()
        run_id = fed.run(None, timeout, echo)
        return run_id, fed.status(run_id)
    finally:
        fed.stop()
