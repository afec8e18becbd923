"""Run ferserver as a child process on free loopback ports: for tests, benchmarks and the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real ferserver; the constructor returns once it logged its ready line.

    Subclasses run other servers the same way by overriding command() and is_ready() (scripts/bench_baselines.py).
    """

    name = "ferserver"

    def __init__(self, *extra: str, timeout: float = 180.0, env: dict | None = None, attempts: int = 3):
        for attempt in range(attempts):
            try:
                return self._start(extra, timeout, env)
            except RuntimeError:
                # free_port() only finds a port that was free a moment ago: another process may take it first.
                if "Address already in use" not in self.output() or attempt == attempts - 1:
                    raise

    def _start(self, extra, timeout: float, env: dict | None) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        fd, name = tempfile.mkstemp(prefix=f"{self.name}-{self.port}-", suffix=".log")
        self.log_path, self._final = Path(name), None
        with os.fdopen(fd, "w") as log:
            self.proc = subprocess.Popen(self.command(extra), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready = [line for line in self.output().splitlines() if self.is_ready(line)]
            if ready:
                self.ready_line = ready[0]
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self._keep_output()}")
            time.sleep(0.2)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s:\n{self._keep_output()}")

    def command(self, extra) -> list[str]:
        exe = Path(sys.executable).parent / "ferserver"
        return [str(exe), "--host", "127.0.0.1", "--port", str(self.port), "--metrics-port", str(self.metrics_port), *extra]

    def is_ready(self, line: str) -> bool:
        return "ferserver ready on" in line

    def output(self) -> str:
        """Everything the server logged so far (or in all, once it has exited and been stopped)."""
        return self._final if self._final is not None else self.log_path.read_text()

    def _keep_output(self) -> str:
        """Once the process has ended: its log, kept in memory, and the temporary file removed (a test run starts
        dozens of servers; their logs piled up in /tmp)."""
        if self._final is None:
            self._final = self.log_path.read_text()
            self.log_path.unlink(missing_ok=True)
        return self._final

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def children(self) -> list[int]:
        """PIDs of the server's descendants (decode workers, multiprocessing's resource tracker), from /proc."""

        def below(pid: int) -> list[int]:
            kids = [int(k) for t in Path(f"/proc/{pid}/task").iterdir() for k in (t / "children").read_text().split()]
            return kids + [g for k in kids for g in below(k)]

        return below(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status (the server drains in-flight work first). output() still answers after."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._keep_output()
        return code

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
