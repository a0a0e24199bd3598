#!/usr/bin/env python3
"""What a status costs Redis: two demo servers sharing one Redis (or a Redis Cluster), the load
generator creating sessions and starting tasks on one while its WebSockets read from the other,
and Redis's own counters divided by the statuses delivered.

Run with: python3 tools/redis_cost.py --demo target/release/examples/axum_demo \
    --loadgen target/release/loadgen [--cluster] [--scenario sparse,bulk] [--runs 3]

For each run it starts two fresh demo processes (`--redis URL`, or `--redis-cluster URLS` with
`--cluster`), sends `CONFIG RESETSTAT` to every master, notes each master's CPU time
(`INFO cpu`: used_cpu_user + used_cpu_sys, from getrusage; /proc/<pid>/stat is read too, as a
cross-check at clock-tick resolution), runs the load generator once, then reads `INFO
commandstats`, `INFO stats` (total_net_input_bytes) and the CPU time again and divides by the
statuses the load generator received (it checks that each arrived once, in order). On a cluster
the masters are summed (the replicas' CPU, spent applying the replication stream, is reported
apart). Medians over the runs are printed as one JSON line per scenario, and a table.

Scenarios: bulk S=100 N=1000 D=0; sparse S=1000 N=20 D=50 (the shape of an agent server: many
sessions, each adding a status now and then); sparse250 S=250 N=20 D=12, the same mix for Redis
(about 20,000 statuses/s, so a 1 ms batch holds about one status of each of some 20 sessions,
and 20 statuses per session) with at most 250 tasks running at once. A demo process runs at most
256 tasks at once by default (the hub's `max_running_tasks`), which sparse's 1,000 exceed, so the
demos are started with `--max-running-tasks` at the scenario's session count (`--no-task-limit`
leaves it out, for a demo built before that flag; then only sparse250 and bulk run). It starts
its own redis-server processes on free
ports (a cluster of three masters with one replica each, like the tests) and stops them after.
Everything runs on 127.0.0.1.

Where the time goes: `--slowlog` logs every request at 0 µs (SLOWLOG, which also logs each
command a script runs) and prints the last run's calls and µs per command and per script, the
scripts named by the hash of `src/hub/redis/*.lua` (logging costs some 10%: use such runs for
the split, not the totals); `--perf FILE` records the masters with `perf record -g`.
"""

import argparse
import hashlib
import glob
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SCENARIOS = {
    "bulk": {"sessions": 100, "steps": 1000, "delay_ms": 0},
    "sparse": {"sessions": 1000, "steps": 20, "delay_ms": 50},
    "sparse250": {"sessions": 250, "steps": 20, "delay_ms": 12},
}


def free_port(bus=False):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        if port < 50000:
            try:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


def cli(port, *args):
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout


def wait_ping(port, within=10.0):
    deadline = time.time() + within
    while time.time() < deadline:
        if cli(port, "ping").strip() == "PONG":
            return True
        time.sleep(0.05)
    return False


def spawn_redis(port, directory, cluster):
    args = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--save", "", "--appendonly", "no", "--dir", directory,
    ]
    if cluster:
        args += [
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", "1000",
            "--repl-diskless-sync-delay", "0",
        ]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Redis:
    """One redis-server, or a cluster of three masters with a replica each."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.dir = tempfile.TemporaryDirectory()
        self.procs = {}
        for _ in range(6 if cluster else 1):
            port = free_port(bus=cluster)
            self.procs[port] = spawn_redis(port, self.dir.name, cluster)
            if not wait_ping(port):
                sys.exit(f"redis-server on {port} did not start")
        if cluster:
            nodes = [f"127.0.0.1:{p}" for p in self.procs]
            subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1",
                 "--cluster-yes"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
            )
            deadline = time.time() + 30
            while not self.healthy():
                if time.time() > deadline:
                    sys.exit("the cluster did not become healthy")
                time.sleep(0.1)

    def healthy(self):
        if not all("cluster_state:ok" in cli(p, "cluster", "info") for p in self.procs):
            return False
        return all(
            "master_link_status:up" in cli(p, "info", "replication")
            for p in self.replicas()
        )

    def role(self, port):
        return "master" if "role:master" in cli(port, "info", "replication") else "replica"

    def masters(self):
        return [p for p in self.procs if self.role(p) == "master"]

    def replicas(self):
        return [p for p in self.procs if self.role(p) != "master"]

    def demo_args(self):
        urls = [f"redis://127.0.0.1:{p}/" for p in self.procs]
        if self.cluster:
            return ["--redis-cluster", ",".join(urls)]
        return ["--redis", urls[0]]

    def stop(self):
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.dir.cleanup()


def info(port, section):
    fields = {}
    for line in cli(port, "info", section).splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def cpu_us(port):
    fields = info(port, "cpu")
    return (float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])) * 1e6


def proc_cpu_us(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1e6 / os.sysconf("SC_CLK_TCK")


def wakeups(pid):
    """Voluntary context switches: how often redis-server went to sleep waiting for work."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    return 0


def commandstats(port):
    stats = {}
    for key, value in info(port, "commandstats").items():
        name = key.removeprefix("cmdstat_")
        parts = dict(item.split("=", 1) for item in value.split(","))
        stats[name] = (int(parts["calls"]), int(parts["usec"]))
    return stats


def resp_query(port, *args):
    """One command over a raw socket, its reply parsed (redis-cli flattens nested replies)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        out = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a), a) for a in (str(x).encode() for x in args))
        sock.sendall(out)
        reader = sock.makefile("rb")

        def parse():
            line = reader.readline()[:-2]
            kind, rest = line[:1], line[1:]
            if kind in (b"+", b"-"):
                return rest.decode()
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = reader.read(n + 2)[:-2]
                return data.decode(errors="replace")
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [parse() for _ in range(n)]
            raise ValueError(f"unexpected reply {line!r}")

        return parse()


def script_names():
    """sha1 of each Lua script of the backend (this tree's, and main's via git), by name."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "hub", "redis")
    names = {}
    for path in glob.glob(os.path.join(here, "*.lua")):
        with open(path, "rb") as f:
            names[hashlib.sha1(f.read()).hexdigest()] = os.path.basename(path)[:-4]
    return names


def slowlog_costs(port, names):
    """Every command of the run from SLOWLOG (logged at 0 µs), grouped by command and script:
    {name: (calls, µs)}."""
    costs = {}
    for entry in resp_query(port, "slowlog", "get", "-1") or []:
        usec, argv = entry[2], entry[3]
        name = argv[0].lower() if argv else "?"
        if name in ("evalsha", "eval") and len(argv) > 1:
            name = f"{name} {names.get(argv[1], argv[1][:8])}"
        calls, total = costs.get(name, (0, 0))
        costs[name] = (calls + 1, total + usec)
    return costs


class Demo:
    def __init__(self, exe, extra, log):
        self.proc = subprocess.Popen(
            [exe, "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
        )
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.url = match.group(1).rstrip("/")
                break
        if self.url is None:
            self.stop()
            sys.exit(f"{exe} did not start (log: {log})")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_once(args, redis, scenario, log_dir):
    shape = SCENARIOS[scenario]
    demo_args = redis.demo_args()
    if not args.no_task_limit:
        demo_args += ["--max-running-tasks", str(max(shape["sessions"], 256))]
    tasks = Demo(args.demo, demo_args, os.path.join(log_dir, "tasks.log"))
    sockets = Demo(args.demo, demo_args, os.path.join(log_dir, "sockets.log"))
    try:
        time.sleep(0.5)
        masters = redis.masters()
        replicas = redis.replicas()
        for port in redis.procs:
            cli(port, "config", "resetstat")
            if args.slowlog:
                cli(port, "config", "set", "slowlog-log-slower-than", "0")
                cli(port, "config", "set", "slowlog-max-len", "1000000")
                cli(port, "slowlog", "reset")
        before = {p: (cpu_us(p), proc_cpu_us(redis.procs[p].pid), wakeups(redis.procs[p].pid))
                  for p in redis.procs}
        perf = None
        if args.perf:
            perf = subprocess.Popen(
                ["perf", "record", "-g", "-o", args.perf, "-p",
                 ",".join(str(redis.procs[p].pid) for p in masters)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
        started = time.time()
        out = subprocess.run(
            [args.loadgen, "--url", sockets.url, "--task-url", tasks.url,
             "--sessions", str(shape["sessions"]), "--steps", str(shape["steps"]),
             "--delay-ms", str(shape["delay_ms"]), "--runs", "1", "--json"],
            capture_output=True, text=True, check=False,
        )
        seconds = time.time() - started
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        after = {p: (cpu_us(p), proc_cpu_us(redis.procs[p].pid), wakeups(redis.procs[p].pid))
                 for p in redis.procs}
        lines = out.stdout.strip().splitlines()
        if out.returncode != 0 or not lines:
            sys.exit(f"the load generator failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        result = json.loads(lines[-1])
        delivered = sum(r["statuses"] for r in result["runs"])
        stats = {}
        net_in = 0
        for port in masters:
            for name, (calls, usec) in commandstats(port).items():
                c, u = stats.get(name, (0, 0))
                stats[name] = (c + calls, u + usec)
            net_in += int(info(port, "stats")["total_net_input_bytes"])
        master_cpu = sum(after[p][0] - before[p][0] for p in masters)
        master_proc_cpu = sum(after[p][1] - before[p][1] for p in masters)
        replica_cpu = sum(after[p][0] - before[p][0] for p in replicas)
        master_wakeups = sum(after[p][2] - before[p][2] for p in masters)
        calls = sum(c for c, _ in stats.values())
        slowlog = {}
        if args.slowlog:
            names = script_names()
            for port in masters:
                for name, (c, u) in slowlog_costs(port, names).items():
                    c0, u0 = slowlog.get(name, (0, 0))
                    slowlog[name] = (c0 + c, u0 + u)
                cli(port, "config", "set", "slowlog-log-slower-than", "10000")
        return {
            "ok": result["ok"],
            "delivered": delivered,
            "seconds": round(seconds, 2),
            "statuses_per_s": result["median"]["statuses_per_s"],
            "cpu_us_per_status": master_cpu / delivered,
            "proc_cpu_us_per_status": master_proc_cpu / delivered,
            "replica_cpu_us_per_status": replica_cpu / delivered if replicas else None,
            "net_in_bytes_per_status": net_in / delivered,
            "wakeups_per_status": master_wakeups / delivered,
            "calls_per_status": calls / delivered,
            "commands": {
                name: {"calls": c, "usec_per_call": round(u / c, 2) if c else 0}
                for name, (c, u) in sorted(stats.items(), key=lambda kv: -kv[1][1])
            },
            "requests_by_script": {
                name: {"calls": c, "usec_per_call": round(u / c, 2),
                       "usec_per_status": round(u / delivered, 2)}
                for name, (c, u) in sorted(slowlog.items(), key=lambda kv: -kv[1][1])
            },
        }
    finally:
        sockets.stop()
        tasks.stop()


def median(runs, key):
    values = [r[key] for r in runs if r[key] is not None]
    return statistics.median(values) if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", required=True, help="the axum demo binary")
    parser.add_argument("--loadgen", required=True, help="the load generator binary")
    parser.add_argument("--cluster", action="store_true", help="a Redis Cluster instead of one Redis")
    parser.add_argument("--scenario", default="sparse,bulk")
    parser.add_argument("--no-task-limit", action="store_true",
                        help="do not pass --max-running-tasks (a demo built before that flag)")
    parser.add_argument("--shape", help="another scenario `S,N,D`, named `custom`")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--label", default="", help="a name for this build in the output")
    parser.add_argument("--slowlog", action="store_true",
                        help="log every request (SLOWLOG at 0 µs) and give each script's calls and "
                             "time apart (a request's time as SLOWLOG has it: its command's run, "
                             "without reading and replying)")
    parser.add_argument("--perf", help="record the masters with `perf record -g` into this file")
    args = parser.parse_args()
    if args.shape:
        sessions, steps, delay_ms = (int(v) for v in args.shape.split(","))
        SCENARIOS["custom"] = {"sessions": sessions, "steps": steps, "delay_ms": delay_ms}
    redis = Redis(args.cluster)
    log_dir = tempfile.mkdtemp(prefix="redis-cost-")
    rows = []
    try:
        for scenario in args.scenario.split(","):
            runs = [run_once(args, redis, scenario, log_dir) for _ in range(args.runs)]
            last = runs[-1]
            row = {
                "label": args.label,
                "redis": "cluster" if args.cluster else "single",
                "scenario": scenario,
                **SCENARIOS[scenario],
                "runs": args.runs,
                "all_ok": all(r["ok"] for r in runs),
                "delivered": last["delivered"],
                "cpu_us_per_status": median(runs, "cpu_us_per_status"),
                "proc_cpu_us_per_status": median(runs, "proc_cpu_us_per_status"),
                "replica_cpu_us_per_status": median(runs, "replica_cpu_us_per_status"),
                "net_in_bytes_per_status": median(runs, "net_in_bytes_per_status"),
                "calls_per_status": median(runs, "calls_per_status"),
                "wakeups_per_status": median(runs, "wakeups_per_status"),
                "statuses_per_s": median(runs, "statuses_per_s"),
                "each_run_cpu_us_per_status": [round(r["cpu_us_per_status"], 3) for r in runs],
                "commands_last_run": last["commands"],
                **({"requests_by_script_last_run": last["requests_by_script"]}
                   if args.slowlog else {}),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        redis.stop()
    print(f"\n{'label':<10} {'redis':<8} {'scenario':<9} {'µs CPU/status':>14} "
          f"{'bytes in/status':>16} {'calls/status':>13} {'wakeups/status':>15} "
          f"{'statuses/s':>11} ok")
    for row in rows:
        print(f"{row['label']:<10} {row['redis']:<8} {row['scenario']:<9} "
              f"{row['cpu_us_per_status']:>14.2f} {row['net_in_bytes_per_status']:>16.0f} "
              f"{row['calls_per_status']:>13.3f} {row['wakeups_per_status']:>15.3f} "
              f"{row['statuses_per_s'] or 0:>11.0f} "
              f"{'yes' if row['all_ok'] else 'NO'}")


if __name__ == "__main__":
    main()
