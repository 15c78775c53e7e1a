"""``tokex serve`` as a process of its own, for the benchmarks, load runs and drills: started, stopped, its
PostgreSQL found, its CPU time read."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import psutil


class Server:
    """``tokex serve`` in a subprocess, on its own TOKEX_HOME unless given a database."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self.home = Path(tempfile.mkdtemp(prefix="tokex-bench-api-"))
        # The embedded server's user must be able to enter TOKEX_HOME when we run as root.
        self.home.chmod(0o755)
        self.env = {**os.environ, "TOKEX_HOME": str(self.home), "TOKEX_MASTER_KEY": secrets.token_hex(32)}
        self.env.pop("DATABASE_URL", None)
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []

    def tokex(self, *argv: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "api.cli", *argv], env=self.env, capture_output=True,
                              text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"tokex {' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def start(self, port: int = 0) -> str:
        """Start serving (on a free port unless given one, e.g. the last one after a restart); return the URL."""
        self.output.clear()
        self.process = subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port),
                                         "--no-rate-limit"],
                                        env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            found = re.search(r"serving on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError("tokex serve did not start:\n" + "".join(self.output))
        threading.Thread(target=self._drain, daemon=True).start()
        return self.url

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def postgres(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cwd"]):
            with contextlib.suppress(psutil.Error):
                if process.info["name"] == "postgres" and str(self.home) in (process.info["cwd"] or ""):
                    found.append(process)
        return found

    def stop(self) -> int:
        status = 0
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            try:
                status = self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                status = self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)
        return status


def cpu_seconds(processes: dict[str, list[psutil.Process]]) -> Counter[str]:
    used: Counter[str] = Counter()
    for name, group in processes.items():
        for process in group:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                used[name] += times.user + times.system
    return used
