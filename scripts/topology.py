#!/usr/bin/env python3
"""The deployment of docker-compose.yml as plain processes on this machine.

docker-compose.yml describes PostgreSQL, Redis, a one-shot migration, N workers and a
web service behind granian. Where there is no Docker engine, this script starts the
same topology against a local PostgreSQL and Redis (the tests use it):

    scripts/topology.py start --run-dir /tmp/agg --database-url postgresql+psycopg://postgres@127.0.0.1/test \\
        --index-url redis://127.0.0.1:6379/0 [--workers 2] [--web-port 8090]
    scripts/topology.py stop --run-dir /tmp/agg
    scripts/topology.py once --database-url ... --index-url ... [--workers 2] [--demo-base URL]

``start`` runs ``aggregator db upgrade`` (the compose file's ``migrate`` service), then
one web process (granian with ``aggregator.wsgi:make_app`` and 2 workers, as in the compose
file, when granian is installed; else gunicorn when that is; else ``aggregator run --role
web``) and ``--workers`` processes ``aggregator run --role worker``; their pids go to
``RUN_DIR/pids.json`` and their output to ``RUN_DIR/*.log``. ``stop`` sends SIGTERM to each (SIGKILL after ``--grace`` seconds). ``once`` starts
``--workers`` processes ``aggregator run --demo --once --role worker`` at the same moment
and waits for them: the racing-workers scenario of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

AGGREGATOR = [sys.executable, "-m", "aggregator.cli"]


def environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env["AGGREGATOR_DATABASE_URL"] = args.database_url
    if args.index_url:
        env["AGGREGATOR_INDEX_URL"] = args.index_url
    if args.index_name:
        env["AGGREGATOR_INDEX_NAME"] = args.index_name
    env.setdefault("AGGREGATOR_ALLOW_PRIVATE", "true")  # local feeds and a local web process
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([*AGGREGATOR, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)


def web_command(port: int) -> list[str]:
    """The compose file's web command on ``port``: granian (the ``server`` extra), else
    gunicorn, else the built-in waitress server of ``aggregator run --role web``."""
    if importlib.util.find_spec("granian") is not None:
        from aggregator.wsgi import granian_command

        return granian_command("127.0.0.1", port, workers=2, threads=4, kill_timeout=10)
    if importlib.util.find_spec("gunicorn") is not None:
        return [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}",
                "--graceful-timeout", "10", "aggregator.wsgi:make_app()"]
    return [*AGGREGATOR, "run", "--role", "web", "--port", str(port)]


def wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return True
        time.sleep(0.2)
    return False


def start(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = environment(args)
    migrate(env)
    processes: dict[str, int] = {}
    commands = {"web": web_command(args.web_port)}
    for n in range(1, args.workers + 1):
        commands[f"worker{n}"] = [*AGGREGATOR, "run", "--role", "worker"]
    for name, command in commands.items():
        log = open(run_dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        processes[name] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT).pid
    (run_dir / "pids.json").write_text(json.dumps(processes))
    if not wait_http(f"http://127.0.0.1:{args.web_port}/healthz", args.timeout):
        print(f"web did not answer on port {args.web_port}; see {run_dir}/web.log", file=sys.stderr)
        return 1
    print(json.dumps({"web": f"http://127.0.0.1:{args.web_port}/", "pids": processes}))
    return 0


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:  # not our child (another invocation started it)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(args: argparse.Namespace) -> int:
    path = Path(args.run_dir) / "pids.json"
    if not path.exists():
        print(f"nothing to stop: {path} is absent", file=sys.stderr)
        return 0
    pids: dict[str, int] = json.loads(path.read_text())
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.grace
    while any(_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed = [name for name, pid in pids.items() if _alive(pid)]
    for name in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[name], signal.SIGKILL)
    path.unlink()
    print(json.dumps({"stopped": sorted(pids), "killed": killed}))
    return 0


def once(args: argparse.Namespace) -> int:
    env = environment(args)
    migrate(env)
    command = [*AGGREGATOR, "run", "--demo", "--once", "--role", "worker"]
    if args.demo_base:
        command += ["--demo-base", args.demo_base]
    children = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(args.workers)
    ]
    failed = 0
    for child in children:
        out, err = child.communicate(timeout=args.timeout)
        sys.stdout.write(out.decode())
        if child.returncode != 0:
            failed += 1
            sys.stderr.write(err.decode())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docker-compose.yml's topology as local processes")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "once"):
        sub = commands.add_parser(name)
        sub.add_argument("--database-url", default=os.environ.get("AGGREGATOR_DATABASE_URL",
                                                                  "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
        sub.add_argument("--index-url", default=os.environ.get("AGGREGATOR_INDEX_URL", "redis://127.0.0.1:6379/0"))
        sub.add_argument("--index-name", default=os.environ.get("AGGREGATOR_INDEX_NAME"))
        sub.add_argument("--workers", type=int, default=2)
        sub.add_argument("--timeout", type=float, default=120.0)
    commands.choices["start"].add_argument("--run-dir", required=True)
    commands.choices["start"].add_argument("--web-port", type=int, default=8090)
    commands.choices["once"].add_argument("--demo-base", help="the demo feeds are served under this URL")
    stop_parser = commands.add_parser("stop")
    stop_parser.add_argument("--run-dir", required=True)
    stop_parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args(argv)
    return {"start": start, "stop": stop, "once": once}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
