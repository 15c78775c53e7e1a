"""Fresh clone to first answer (``make bench-first-start``): how long a newcomer waits after ``git clone``.

    python3 loadtest/first_start.py [--repo PATH] [--rev REV] [--port PORT] [--timeout 600]

Clones ``--repo`` (default: the repository this file is in) at ``--rev`` (default: its HEAD, committed work only)
into a temporary directory, starts the clock, runs ``make run`` there as the README says, and polls
``GET /v1/instruments`` until it answers 200, then waits for the demo's banner (the market seeded, the keys
printed). ``make run`` goes in two steps, timed apart: its install target (``make .venv/.installed``), then
``make run`` itself, which finds the install done and starts the demo. Besides wall times it prints the install's
CPU time, which a busy machine stretches far less than the wall time. The caches of uv and pip are not cleared: a
second clone on the same machine finds its wheels there, as a newcomer's second try would; the first ever install
also downloads them (``UV_CACHE_DIR`` set to a new folder measures that). Runs on the standard library only, since
the clone has no virtual environment yet.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
BANNER = b"tokex demo: a live market on"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(HERE), help="the repository to clone (default: this one)")
    parser.add_argument("--rev", default="HEAD", help="the revision to check out (default: HEAD)")
    parser.add_argument("--port", type=int, default=0, help="where the demo listens (default: a free port)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args()

    rev = subprocess.run(["git", "-C", args.repo, "rev-parse", args.rev], check=True, capture_output=True,
                         text=True).stdout.strip()
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/v1/instruments"
    with tempfile.TemporaryDirectory(prefix="tokex-first-start-") as temp:
        # As root the embedded PostgreSQL runs as another user, who must reach TOKEX_HOME inside this folder.
        os.chmod(temp, 0o755)
        clone = Path(temp) / "tokex"
        # The clock starts before the clone, as a newcomer's does; a local clone takes a fraction of a second.
        start = time.monotonic()
        subprocess.run(["git", "clone", "--quiet", "--no-checkout", args.repo, str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", rev], check=True)
        cloned = time.monotonic() - start
        env = dict(os.environ, TOKEX_PORT=str(port), TOKEX_HOME=str(Path(temp) / "var"))
        env.pop("VIRTUAL_ENV", None)
        log = open(Path(temp) / "make-run.log", "wb")  # noqa: SIM115 - closed below, after the server stops
        # `make run` in two steps, to time them apart: its install target, then `make run`, which finds it done.
        # The install's CPU time (user + system, of every process it ran) varies far less than its wall time on a
        # shared machine, so it is the figure to compare between two runs.
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        install = subprocess.run(["make", ".venv/.installed"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
        installed = time.monotonic() - start
        answered = banner = None
        make = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while install.returncode == 0 and time.monotonic() - start < args.timeout:
                if make.poll() is not None:
                    break
                if answered is None and answers(url):
                    answered = time.monotonic() - start
                if answered is not None and BANNER in (Path(temp) / "make-run.log").read_bytes():
                    banner = time.monotonic() - start
                    break
                time.sleep(0.05)
        finally:
            # make runs the demo in its own session: stop the whole group, as Ctrl-C in a terminal would.
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGINT)
                try:
                    make.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(make.pid, signal.SIGKILL)
                    make.wait()
            log.close()
        output = (Path(temp) / "make-run.log").read_text(errors="replace")

    print(f"tokex first start: git clone of {rev[:12]} -> make run -> GET /v1/instruments answers 200")
    if answered is None:
        print(f"  no answer within {args.timeout:.0f} s; the install exited {install.returncode}, make run "
              f"{make.returncode}; their output:")
        print(output[-4000:])
        return 1
    print(f"  clone               {cloned:6.1f} s")
    print(f"  install             {installed - cloned:6.1f} s (make's install target: venv, uv, dependencies, tokex; "
          f"{cpu:.1f} s of CPU)")
    print(f"  server start        {answered - installed:6.1f} s (embedded PostgreSQL, migrations, listening)")
    print(f"  total               {answered:6.1f} s  (load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} cores; uv's and pip's caches as this machine has them)")
    if banner is not None:
        print(f"  demo banner         {banner:6.1f} s (the market seeded and the demo keys printed)")
    warnings = [line for line in output.splitlines() if "Warning" in line or "deprecated" in line.lower()]
    for line in warnings[:5]:
        print(f"  make run said: {line.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
