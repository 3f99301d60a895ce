#!/usr/bin/env python3
"""pgwarden vs PgBouncer, side by side, with pgbench (Python 3 standard library only).

Starts a throwaway PostgreSQL, writes ONE pgbouncer.ini + userlist.txt that PgBouncer and pgwarden both load
unchanged (pgwarden's plugin run loads a second file that %includes it and adds a [pgwarden] section), and
runs pgbench against a direct connection, PgBouncer and pgwarden interleaved for each scenario, round after
round, the order rotated by one place each round (A B C, B C A, C A B, ...). Each pooler run starts the
pooler fresh, warms it up, then measures: pgbench's TPS and average latency, and the pooler's CPU time
(utime + stime of its PID in /proc) over the measured window. Idle-client memory is measured separately
with an asyncio client holding N logged-in connections.

Run it through bench/sidebyside/run.sh (which builds pgwarden) or with PGWARDEN_BIN set.
"""

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1

USERS = {
    # name: (password, password_encryption of the role)
    "bench_md5": ("md5-secret-1", "md5"),
    "bench_scram": ("scram-secret-1", "scram-sha-256"),
}
POOL_SIZE = 20

# Scenarios: pgbench options, clients, user, and the targets run in each round (in this order in round 1,
# rotated by one place each following round: see `round_order`).
# "direct" runs with min(clients, POOL_SIZE) clients: the ceiling at equal backend count.
SCENARIOS = {
    "select_c10": dict(args=["-S"], clients=10, targets=["direct", "pgbouncer", "pgwarden"]),
    "select_c100": dict(
        args=["-S"], clients=100, targets=["direct", "pgbouncer", "pgwarden", "pgwarden+plugins"]
    ),
    "select_c500": dict(args=["-S"], clients=500, targets=["direct", "pgbouncer", "pgwarden"]),
    "tpcb_c50": dict(args=[], clients=50, targets=["direct", "pgbouncer", "pgwarden"]),
    "select_extended_c100": dict(
        args=["-S", "-M", "extended"], clients=100, targets=["direct", "pgbouncer", "pgwarden"]
    ),
    "select_prepared_c100": dict(
        args=["-S", "-M", "prepared"], clients=100, targets=["direct", "pgbouncer", "pgwarden"]
    ),
    "connect_md5_c20": dict(
        args=["-S", "-C"], clients=20, user="bench_md5", targets=["direct", "pgbouncer", "pgwarden"]
    ),
    "connect_scram_c20": dict(
        args=["-S", "-C"], clients=20, user="bench_scram", targets=["direct", "pgbouncer", "pgwarden"]
    ),
    "latency_c20": dict(args=["-S"], clients=20, targets=["direct", "pgbouncer", "pgwarden"]),
    "cores_c100": dict(
        args=["-S"], clients=100, targets=["pgbouncer@cpu0", "pgwarden@cpu0", "pgwarden@cpu0-1"]
    ),
}
QUICK_SCENARIOS = ["select_c10", "select_c100", "select_prepared_c100", "connect_scram_c20", "latency_c20"]


def round_order(targets, rnd):
    """The targets of round `rnd` (1-based): the scenario's list rotated by rnd - 1 places (A B C, B C A,
    C A B, ...). Every target then runs first, in the middle and last equally often over as many rounds as
    targets, so a drift within a round (a machine that slows after the direct run's load, a neighbour that
    comes and goes) does not always fall on the same pooler."""
    k = (rnd - 1) % len(targets)
    return targets[k:] + targets[:k]


# Instructions per transaction under callgrind (item `instructions`): each pooler alone under valgrind, pgbench
# -t (a fixed count of transactions per client) after a warm-up, the counters zeroed between the two. Unlike
# the timings, the counts hardly move from run to run on a shared VM: a ratio of work done, not of speed (a
# cache miss or a futex wait counts as one instruction). pgbench, PostgreSQL and the kernel are not counted.
INSTRUCTION_RUNS = {
    "select_c10": dict(args=["-S"], clients=10, warmup_tx=50, tx=500,
                       targets=["pgbouncer", "pgwarden", "pgwarden+plugins"]),
    "connect_md5_c10": dict(args=["-S", "-C"], clients=10, warmup_tx=10, tx=100, user="bench_md5",
                            targets=["pgbouncer", "pgwarden"]),
}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, pid=None, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pid is not None and not os.path.exists(f"/proc/{pid}"):
            raise RuntimeError("process exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.as_root = os.geteuid() == 0
        self.work = tempfile.mkdtemp(prefix="pgw-sidebyside.")
        os.chmod(self.work, 0o755)
        self.runas = None
        if self.as_root:
            pw = pwd.getpwnam(opts.os_user)
            self.runas = pw
            os.chown(self.work, pw.pw_uid, pw.pw_gid)
        self.pg_port = free_port()
        self.pooler_port = free_port()
        self.pgdata = os.path.join(self.work, "pgdata")
        self.sock = os.path.join(self.work, "sock")  # PostgreSQL's socket directory
        self.psock = os.path.join(self.work, "psock")  # the poolers' socket directory
        self.pg_started = False
        self.pooler = None

    # -- processes -------------------------------------------------------------------------------------
    def user_cmd(self, cmd):
        """cmd run as the unprivileged OS user when we are root (setpriv execs: the PID is the program's)."""
        if not self.as_root:
            return cmd
        return [
            "setpriv",
            f"--reuid={self.runas.pw_uid}",
            f"--regid={self.runas.pw_gid}",
            "--init-groups",
            "--",
        ] + cmd

    def user_env(self):
        env = dict(os.environ)
        if self.as_root:
            env["HOME"] = self.runas.pw_dir
            env["USER"] = env["LOGNAME"] = self.runas.pw_name
        return env

    def run_user(self, cmd, **kw):
        return sh(self.user_cmd(cmd), env=self.user_env(), cwd=self.work, **kw)

    def mkdir(self, path):
        os.makedirs(path, exist_ok=True)
        if self.as_root:
            os.chown(path, self.runas.pw_uid, self.runas.pw_gid)

    # -- PostgreSQL ------------------------------------------------------------------------------------
    def start_postgres(self):
        pgbin = self.o.pg_bin
        self.mkdir(self.sock)
        self.mkdir(self.psock)
        self.mkdir(self.pgdata)
        log(f"initdb {self.pgdata} (port {self.pg_port})")
        self.run_user([f"{pgbin}/initdb", "-D", self.pgdata, "-A", "trust", "-U", "postgres", "--no-sync"])
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(
                f"""
# pgwarden side-by-side benchmark: a throwaway cluster, durability off (a pooler benchmark, not a disk one)
port = {self.pg_port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '{self.sock}'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_connections = off
log_disconnections = off
"""
            )
        with open(os.path.join(self.pgdata, "pg_hba.conf"), "w") as f:
            f.write(
                "local all postgres trust\n"
                "local all all md5\n"
                "host all postgres 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 md5\n"
            )
        self.run_user(
            [f"{pgbin}/pg_ctl", "-D", self.pgdata, "-l", os.path.join(self.work, "postgres.log"), "-w", "start"]
        )
        self.pg_started = True
        self.psql("CREATE DATABASE bench")
        for user, (password, enc) in USERS.items():
            self.psql(f"SET password_encryption = '{enc}'; CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        log(f"pgbench -i -s {self.o.scale}")
        sh(
            ["pgbench", "-i", "-q", "-s", str(self.o.scale), "-h", self.sock, "-p", str(self.pg_port),
             "-U", "postgres", "bench"],
        )
        self.psql("GRANT ALL ON ALL TABLES IN SCHEMA public TO " + ", ".join(USERS), db="bench")
        self.psql("VACUUM ANALYZE", db="bench")

    def psql(self, sql, db="postgres"):
        return sh(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", str(self.pg_port),
             "-U", "postgres", "-d", db, "-c", sql]
        ).stdout

    def stop_postgres(self):
        if self.pg_started:
            self.run_user([f"{self.o.pg_bin}/pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop"])
            self.pg_started = False

    # -- pooler configuration --------------------------------------------------------------------------
    def write_configs(self):
        secrets = dict(
            line.split("|", 1)
            for line in self.psql(
                "SELECT rolname || '|' || rolpassword FROM pg_authid WHERE rolname LIKE 'bench_%'"
            ).split()
        )
        self.userlist = os.path.join(self.work, "userlist.txt")
        with open(self.userlist, "w") as f:
            for user in USERS:
                f.write(f'"{user}" "{secrets[user]}"\n')
        self.ini = os.path.join(self.work, "pgbouncer.ini")
        with open(self.ini, "w") as f:
            f.write(
                f"""; Written by bench/sidebyside: loaded unchanged by PgBouncer and by pgwarden.
[databases]
bench = host={self.sock} port={self.pg_port} dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.pooler_port}
unix_socket_dir = {self.psock}
pidfile = {self.work}/pooler.pid
auth_type = md5
auth_file = {self.userlist}
admin_users = bench_md5
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 12000
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
"""
            )
        # pgwarden with the shipped readonly policy and router plugins: the same ini, plus [pgwarden].
        self.ini_plugins = os.path.join(self.work, "pgwarden-plugins.ini")
        self.mkdir(os.path.join(self.work, "plugin-cache"))
        with open(self.ini_plugins, "w") as f:
            f.write(
                f"""%include {self.ini}

[pgwarden]
plugin_cache_dir = {self.work}/plugin-cache
; a router consulted at every login (its rule sends the bench users where they asked to go)
plugin.route.path = builtin:router
plugin.route.config.rule.1 = user=bench_* -> database=bench
; every Query and Parse on database bench is checked by the readonly policy (pgbench -S's SELECT passes)
plugin.ro.path = builtin:readonly
plugin.ro.databases = bench
"""
            )
        for p in (self.userlist, self.ini, self.ini_plugins):
            os.chmod(p, 0o644)

    # -- poolers ---------------------------------------------------------------------------------------
    def start_pooler(self, target, wrapper=(), start_timeout=30):
        """Start the pooler a target names ('pgbouncer', 'pgwarden', 'pgwarden+plugins', '<x>@cpuA-B'),
        under `wrapper` (a command line that runs the rest, such as valgrind) when given."""
        kind, _, cpus = target.partition("@")
        env = self.user_env()
        prefix = list(wrapper)
        if cpus:
            cpulist = cpus[3:].replace("-", ",") if cpus.startswith("cpu") else cpus
            # pgwarden's runtime is tokio's default multi-thread one: TOKIO_WORKER_THREADS sets its size.
            prefix = ["taskset", "-c", cpulist] + prefix
            env["TOKIO_WORKER_THREADS"] = str(len(cpulist.split(",")))
        if kind == "pgbouncer":
            cmd = [self.o.pgbouncer, self.ini]
        elif kind == "pgwarden":
            cmd = [self.pgwarden, self.ini]
        elif kind == "pgwarden+plugins":
            cmd = [self.pgwarden, self.ini_plugins]
        else:
            raise ValueError(target)
        logpath = os.path.join(self.work, f"{kind.replace('+', '_')}.log")
        logf = open(logpath, "a")
        logf.write(f"--- {time.strftime('%H:%M:%S')} {target}\n")
        logf.flush()
        proc = subprocess.Popen(
            self.user_cmd(prefix + cmd), env=env, cwd=self.work, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        try:
            wait_port(self.pooler_port, proc.pid, timeout=start_timeout)
        except RuntimeError as e:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"{target} did not start: {e}; see {logpath}") from None
        self.pooler = proc
        return proc

    def stop_pooler(self, timeout=15):
        proc, self.pooler = self.pooler, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pidfile = os.path.join(self.work, "pooler.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)

    def admin(self, sql):
        env = dict(os.environ, PGPASSWORD=USERS["bench_md5"][0], PGSSLMODE="disable", PGGSSENCMODE="disable")
        return subprocess.run(
            ["psql", "-X", "-h", "127.0.0.1", "-p", str(self.pooler_port), "-U", "bench_md5", "-d", "pgbouncer",
             "-c", sql],
            text=True, capture_output=True, env=env,
        ).stdout

    # -- pgbench -----------------------------------------------------------------------------------------
    def pgbench(self, port, scen, clients, duration=None, host="127.0.0.1", per_client=None):
        """pgbench for `duration` seconds, or `per_client` transactions per client."""
        user = scen.get("user", "bench_md5")
        env = dict(os.environ, PGPASSWORD=USERS[user][0], PGSSLMODE="disable", PGGSSENCMODE="disable")
        length = ["-t", str(per_client)] if per_client else ["-T", str(duration)]
        cmd = ["pgbench", "-n", "-h", host, "-p", str(port), "-U", user, "-c", str(clients),
               "-j", str(min(NPROC, clients))] + length + scen["args"] + ["bench"]
        p = subprocess.run(cmd, text=True, capture_output=True, env=env)
        out = p.stdout + p.stderr
        res = {"cmd": " ".join(cmd), "exit": p.returncode}
        for key, pat in (
            ("tps", r"^tps = ([\d.]+)"),
            ("latency_ms", r"^latency average = ([\d.]+) ms"),
            ("transactions", r"^number of transactions actually processed: (\d+)"),
            ("failed", r"^number of failed transactions: (\d+)"),
        ):
            m = re.search(pat, out, re.M)
            if m:
                res[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
        errors = [line for line in out.splitlines() if "error" in line.lower() or "abort" in line.lower()]
        if p.returncode != 0 or "tps" not in res or errors:
            res["error"] = "\n".join(errors[:5]) or out[-500:]
        return res

    def run_target(self, scen_name, scen, target):
        clients = scen["clients"]
        if target == "direct":
            clients = min(clients, POOL_SIZE)
            self.pgbench(self.pg_port, scen, clients, self.o.warmup)
            res = self.pgbench(self.pg_port, scen, clients, self.o.duration)
            res["clients"] = clients
            return res
        proc = self.start_pooler(target)
        try:
            self.pgbench(self.pooler_port, scen, clients, self.o.warmup)
            before = cpu_ticks(proc.pid)
            res = self.pgbench(self.pooler_port, scen, clients, self.o.duration)
            res["cpu_s"] = (cpu_ticks(proc.pid) - before) / CLK_TCK
            res["clients"] = clients
            if res.get("transactions"):
                res["cpu_s_per_10k"] = res["cpu_s"] / res["transactions"] * 10_000
            if target == "pgwarden+plugins":
                res["show_plugins"] = self.admin("SHOW PLUGINS")
            return res
        finally:
            self.stop_pooler()

    # -- instructions (callgrind) -------------------------------------------------------------------------
    def instructions(self, name, target):
        """The pooler's instructions per transaction under callgrind for INSTRUCTION_RUNS[name]."""
        run = INSTRUCTION_RUNS[name]
        tag = f"{name}.{target.replace('+', '_')}"
        out_base = os.path.join(self.work, f"callgrind.{tag}")
        for old in [f for f in os.listdir(self.work) if f.startswith(f"callgrind.{tag}.")]:
            os.unlink(os.path.join(self.work, old))
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_base}.%p"]
        proc = self.start_pooler(target, wrapper=wrapper, start_timeout=120)
        try:
            warm = self.pgbench(self.pooler_port, run, run["clients"], per_client=run["warmup_tx"])
            if warm.get("error"):
                return {"error": warm["error"]}
            self.run_user(["callgrind_control", "--zero", str(proc.pid)])
            res = self.pgbench(self.pooler_port, run, run["clients"], per_client=run["tx"])
            self.run_user(["callgrind_control", "--dump", str(proc.pid)])
        finally:
            self.stop_pooler(timeout=120)
        dump = f"{out_base}.{proc.pid}.1"
        total = None
        if os.path.exists(dump):
            with open(dump) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
                        break
        out = {"transactions": res.get("transactions"), "instructions": total, "cmd": res.get("cmd")}
        if res.get("error"):
            out["error"] = res["error"]
        elif not total or not res.get("transactions"):
            out["error"] = f"no callgrind totals in {dump}"
        else:
            out["per_tx"] = total / res["transactions"]
        return out

    # -- idle clients ------------------------------------------------------------------------------------
    def idle_rss(self, target, n):
        proc = self.start_pooler(target)
        try:
            holder = IdleClients(self.pooler_port, "bench_md5", USERS["bench_md5"][0])
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(holder.open(1))  # the pool's first server and welcome
                time.sleep(0.5)
                before = vm_rss_kib(proc.pid)
                t0 = time.time()
                loop.run_until_complete(holder.open(n))
                login_s = time.time() - t0
                # The idle state, not the logins' tail: pgwarden parks a client that has sent nothing 5 ms
                # after its login; the wait leaves room for a loaded machine.
                time.sleep(3.0)
                after = vm_rss_kib(proc.pid)
                opened = holder.count() - 1
                loop.run_until_complete(holder.close())
            finally:
                loop.close()
            return {
                "clients": opened, "rss_before_kib": before, "rss_after_kib": after,
                "kib_per_client": (after - before) / max(opened, 1), "login_s": login_s,
                "failures": holder.failures[:3], "failed": len(holder.failures),
            }
        finally:
            self.stop_pooler()

    def cleanup(self):
        try:
            self.stop_pooler()
        finally:
            self.stop_postgres()
            if not self.o.keep:
                shutil.rmtree(self.work, ignore_errors=True)


class IdleClients:
    """Logged-in clients that then sit idle: startup packet, md5 password, ReadyForQuery, nothing more."""

    def __init__(self, port, user, password):
        self.port, self.user, self.password = port, user, password
        self.conns = []
        self.failures = []

    def count(self):
        return len(self.conns)

    async def one(self):
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        params = b"user\0" + self.user.encode() + b"\0database\0bench\0\0"
        writer.write(struct.pack("!ii", 8 + len(params), 196608) + params)
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            body = await reader.readexactly(length - 4)
            if kind == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code == 5:
                    inner = hashlib.md5((self.password + self.user).encode()).hexdigest()
                    digest = "md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    msg = digest.encode() + b"\0"
                    writer.write(b"p" + struct.pack("!i", 4 + len(msg)) + msg)
                elif code != 0:
                    raise RuntimeError(f"unexpected auth request {code}")
            elif kind == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            elif kind == b"Z":
                self.conns.append(writer)
                return

    async def open(self, n):
        sem = asyncio.Semaphore(100)

        async def guarded():
            async with sem:
                try:
                    await asyncio.wait_for(self.one(), 30)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    self.failures.append(repr(e))

        await asyncio.gather(*(guarded() for _ in range(n)))

    async def close(self):
        for w in self.conns:
            try:
                w.write(b"X\0\0\0\4")
                w.close()
            except Exception:  # noqa: BLE001
                pass
        self.conns = []
        await asyncio.sleep(0.5)


# -- report ------------------------------------------------------------------------------------------------
def plugin_call_us(show, name="ro"):
    """Microseconds per call inside plugin `name`, from SHOW PLUGINS' psql output (total_call_time / calls)."""
    lines = [l for l in (show or "").splitlines() if "|" in l]
    if not lines:
        return None
    head = [c.strip() for c in lines[0].split("|")]
    for l in lines[1:]:
        cells = [c.strip() for c in l.split("|")]
        if len(cells) == len(head) and cells[0] == name:
            row = dict(zip(head, cells))
            try:
                calls, total = int(row["calls"]), int(row["total_call_time"])
            except (KeyError, ValueError):
                return None
            return total / calls if calls else None
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=0):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def summarize(results, scenarios):
    """Per scenario and target: median TPS, min–max, median of per-round ratios to PgBouncer, CPU, latency."""
    summary = {}
    for name in scenarios:
        rounds = [r for r in results["runs"] if r["scenario"] == name]
        by_target = {}
        for target in SCENARIOS[name]["targets"]:
            runs = [r for r in rounds if r["target"] == target]
            ok = [r for r in runs if "error" not in r and r.get("tps")]
            tps = [r["tps"] for r in ok]
            ratios = []
            for r in ok:
                ref = next(
                    (x for x in rounds if x["round"] == r["round"] and x["target"].startswith("pgbouncer")
                     and "error" not in x and x.get("tps")), None)
                if ref:
                    ratios.append(r["tps"] / ref["tps"])
            by_target[target] = {
                "runs": len(runs), "ok": len(ok),
                "tps_median": med(tps), "tps_min": min(tps) if tps else None, "tps_max": max(tps) if tps else None,
                "ratio_to_pgbouncer": med(ratios),
                "cpu_s_per_10k": med([r.get("cpu_s_per_10k") for r in ok]),
                "latency_ms": med([r.get("latency_ms") for r in ok]),
                "clients": runs[0]["clients"] if runs else None,
                "errors": sorted({r["error"].splitlines()[0][:160] for r in runs if "error" in r and r["error"]}),
            }
        summary[name] = by_target
    return summary


def report(results, summary):
    m = results["machine"]
    o = results["options"]
    lines = [
        f"# pgwarden vs PgBouncer, side by side — {results['started']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, {m['postgres']}, {m['pgbouncer']}, "
        f"pgwarden {m['pgwarden_commit']}. Load (1/5/15 min) before: {m['load_before']}, after: "
        f"{results.get('load_after', '?')}.",
        f"Rounds: {o['rounds']} (the targets' order rotated by one place each round), {o['duration']} s per "
        f"run after a {o['warmup']} s warm-up, pgbench scale "
        f"{o['scale']}, pool size {POOL_SIZE}, transaction mode; pgbench over TCP 127.0.0.1, the poolers to "
        "PostgreSQL over its Unix socket; fsync/synchronous_commit/full_page_writes off.",
        "",
        "TPS: median (min–max) over rounds; ratio: median of the per-round ratios to PgBouncer (run in the same "
        "round); CPU: the pooler's utime+stime per 10k transactions (s); latency: pgbench's average (ms). "
        "`direct` is pgbench straight to PostgreSQL with min(clients, 20) clients: the ceiling at equal "
        "backend count.",
        "",
    ]
    for name, by_target in summary.items():
        scen = SCENARIOS[name]
        lines += [
            f"## {name}: pgbench {' '.join(scen['args']) or '(TPC-B)'} -c {scen['clients']}"
            + (f" as {scen['user']}" if "user" in scen else ""),
            "",
            "| target | clients | TPS median | min–max | ratio to PgBouncer | CPU s / 10k tx | latency ms |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for target, s in by_target.items():
            if s["ok"] == 0:
                why = "cannot: " + (s["errors"][0] if s["errors"] else "no result")
                lines.append(f"| {target} | {s['clients']} | {why} | | | | |")
                continue
            lines.append(
                f"| {target} | {s['clients']} | {fmt(s['tps_median'])} | {fmt(s['tps_min'])}–{fmt(s['tps_max'])} "
                f"| {fmt(s['ratio_to_pgbouncer'], 2)} | {fmt(s['cpu_s_per_10k'], 3)} | {fmt(s['latency_ms'], 3)} |"
            )
        lines.append("")
    lat = summary.get("latency_c20")
    if lat and lat["direct"]["latency_ms"]:
        d = lat["direct"]["latency_ms"]
        lines += ["## Latency added over a direct connection at equal backend count (-S -c 20)", "",
                  "| pooler | latency ms | added ms |", "|---|--:|--:|"]
        for t in ("pgbouncer", "pgwarden"):
            if lat[t]["latency_ms"]:
                lines.append(f"| {t} | {lat[t]['latency_ms']:.3f} | {lat[t]['latency_ms'] - d:+.3f} |")
        lines.append("")
    plug = summary.get("select_c100", {})
    if plug.get("pgwarden+plugins", {}).get("tps_median") and plug["pgwarden"]["tps_median"]:
        runs = [r for r in results["runs"] if r["scenario"] == "select_c100"]
        ratios = []
        for r in runs:
            if r["target"] == "pgwarden+plugins" and r.get("tps"):
                base = next((x for x in runs if x["round"] == r["round"] and x["target"] == "pgwarden"
                             and x.get("tps")), None)
                if base:
                    ratios.append(r["tps"] / base["tps"])
        cpu_delta = None
        if plug["pgwarden+plugins"]["cpu_s_per_10k"] and plug["pgwarden"]["cpu_s_per_10k"]:
            cpu_delta = (plug["pgwarden+plugins"]["cpu_s_per_10k"] - plug["pgwarden"]["cpu_s_per_10k"]) / 10_000 * 1e6
        per_call = med([plugin_call_us(r.get("show_plugins")) for r in runs])
        lines += ["## Plugins (readonly policy + router) loaded, -S -c 100", "",
                  f"TPS with plugins / without (median of per-round ratios): {fmt(med(ratios), 3)}; pooler CPU "
                  f"added per query: {fmt(cpu_delta, 2)} µs; time inside the readonly plugin per call "
                  f"(SHOW PLUGINS' total_call_time / calls, median over rounds): {fmt(per_call, 2)} µs.", ""]
        shows = [r.get("show_plugins") for r in runs if r.get("show_plugins")]
        if shows:
            lines += ["SHOW PLUGINS after the last plugin run (calls must cover every query):", "", "```",
                      shows[-1].rstrip(), "```", ""]
    cores = summary.get("cores_c100")
    if cores:
        one, two = cores["pgwarden@cpu0"]["tps_median"], cores["pgwarden@cpu0-1"]["tps_median"]
        if one and two:
            lines += ["## Cores: pgwarden pinned to 1 vs 2 CPUs (-S -c 100; pgbench and PostgreSQL unpinned)", "",
                      f"pgwarden 2 CPUs / 1 CPU: {two / one:.2f}×; PgBouncer (single-threaded) pinned to one CPU: "
                      f"{fmt(cores['pgbouncer@cpu0']['tps_median'])} TPS.", ""]
    idle = results.get("idle", [])
    if idle:
        lines += ["## Memory per idle client (logged in with md5, then idle)", "",
                  "| pooler | clients | RSS before KiB | RSS after KiB | KiB per client | login time s | failures |",
                  "|---|--:|--:|--:|--:|--:|--:|"]
        for r in idle:
            lines.append(
                f"| {r['target']} | {r['clients']} | {r['rss_before_kib']:,} | {r['rss_after_kib']:,} | "
                f"{r['kib_per_client']:.2f} | {r['login_s']:.2f} | {r['failed']} |")
        lines.append("")
    lines += instructions_section(results.get("instructions", []))
    lines += targets_section(summary, idle, results["runs"])
    return "\n".join(lines) + "\n"


def instructions_section(runs):
    """The callgrind counts: instructions per transaction and each pooler's ratio to PgBouncer's."""
    if not runs:
        return []
    out = ["## Instructions per transaction (callgrind)", "",
           "Each pooler alone under `valgrind --tool=callgrind`, counters zeroed after a warm-up; pgbench -t. The "
           "pooler's user-space instructions only (not the kernel's, not PostgreSQL's or pgbench's): the work "
           "it does, steady from run to run where the timings above are not.", "",
           "| run | target | transactions | instructions per tx | ratio to PgBouncer |", "|---|---|--:|--:|--:|"]
    for r in runs:
        if not r.get("per_tx"):
            out.append(f"| {r['run']} | {r['target']} | — | error: {(r.get('error') or '?').splitlines()[0][:100]} | |")
            continue
        ref = next((x for x in runs if x["run"] == r["run"] and x["target"] == "pgbouncer" and x.get("per_tx")),
                   None)
        ratio = r["per_tx"] / ref["per_tx"] if ref else None
        out.append(f"| {r['run']} | {r['target']} | {r['transactions']:,} | {r['per_tx']:,.0f} | {fmt(ratio, 2)} |")
    out.append("")
    return out


def targets_section(summary, idle, runs):
    out = ["## Targets", "", "| target | value | met |", "|---|---|---|"]

    def row(what, value, ok):
        out.append(f"| {what} | {value} | {'yes' if ok else ('no' if ok is not None else '—')} |")

    for name, need in (("select_c100", 1.2), ("select_c500", 1.2), ("select_c10", 1.0)):
        s = summary.get(name, {}).get("pgwarden")
        if s and s["ratio_to_pgbouncer"]:
            r = s["ratio_to_pgbouncer"]
            row(f"{name}: pgwarden/PgBouncer ≥ {need}{'' if need > 1 else ' (ahead)'}", f"{r:.2f}",
                r >= need if need > 1 else r > 1.0)
    cpu = [(n, s["pgwarden"]["cpu_s_per_10k"], s["pgbouncer"]["cpu_s_per_10k"]) for n, s in summary.items()
           if "pgwarden" in s and "pgbouncer" in s and s["pgwarden"]["cpu_s_per_10k"] and s["pgbouncer"]["cpu_s_per_10k"]
           and n.startswith("select_c")]
    for n, w, b in cpu:
        row(f"{n}: CPU per tx pgwarden/PgBouncer ≤ 0.7", f"{w / b:.2f}", w / b <= 0.7)
    lat = summary.get("latency_c20")
    if lat and lat["direct"]["latency_ms"] and lat["pgwarden"]["latency_ms"] and lat["pgbouncer"]["latency_ms"]:
        d = lat["direct"]["latency_ms"]
        w, b = lat["pgwarden"]["latency_ms"] - d, lat["pgbouncer"]["latency_ms"] - d
        row("latency added ≤ PgBouncer's", f"{w:+.3f} ms vs {b:+.3f} ms", w <= b)
    by = {}
    for r in idle:
        by.setdefault(r["clients_asked"], {})[r["target"]] = r["kib_per_client"]
    for n, v in sorted(by.items()):
        if "pgwarden" in v and "pgbouncer" in v:
            row(f"RSS per idle client at {n:,} ≤ PgBouncer's", f"{v['pgwarden']:.2f} vs {v['pgbouncer']:.2f} KiB",
                v["pgwarden"] <= v["pgbouncer"])
    for n in ("connect_md5_c20", "connect_scram_c20"):
        s = summary.get(n, {}).get("pgwarden")
        if s and s["ratio_to_pgbouncer"]:
            row(f"{n}: pgwarden/PgBouncer ≥ 1", f"{s['ratio_to_pgbouncer']:.2f}", s["ratio_to_pgbouncer"] >= 1.0)
    p, s = summary.get("select_prepared_c100", {}).get("pgwarden"), summary.get("select_c100", {}).get("pgwarden")
    if p and s and p["tps_median"] and s["tps_median"]:
        row("-M prepared ≥ -M simple through pgwarden (c100)", f"{p['tps_median']:,.0f} vs {s['tps_median']:,.0f}",
            p["tps_median"] >= s["tps_median"])
    pl = summary.get("select_c100", {}).get("pgwarden+plugins")
    if pl and pl["tps_median"] and s and s["tps_median"]:
        r = pl["tps_median"] / s["tps_median"]
        row("plugins loaded ≥ 0.97× without (c100, medians)", f"{r:.3f}", r >= 0.97)
    if pl and pl["cpu_s_per_10k"] and s and s["cpu_s_per_10k"]:
        us = (pl["cpu_s_per_10k"] - s["cpu_s_per_10k"]) / 10_000 * 1e6
        row("plugins: pooler CPU added per query ≤ 2 µs", f"{us:.1f} µs", us <= 2.0)
    calls = med([plugin_call_us(r.get("show_plugins")) for r in runs if r.get("scenario") == "select_c100"])
    if calls is not None:
        row("plugins: time per readonly call (SHOW PLUGINS) ≤ 2 µs", f"{calls:.2f} µs", calls <= 2.0)
    out.append("")
    return out


def machine(opts, pgwarden):
    def first(cmd):
        try:
            return subprocess.run(cmd, text=True, capture_output=True).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "?"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = first(["git", "-C", REPO, "describe", "--always", "--dirty", "--abbrev=12"])
    return {
        "nproc": NPROC, "cpu": cpu, "kernel": platform.release(),
        "postgres": first([f"{opts.pg_bin}/postgres", "--version"]),
        "pgbouncer": first([opts.pgbouncer, "--version"]),
        "pgbench": first(["pgbench", "--version"]),
        "pgwarden_commit": commit, "pgwarden_bin": pgwarden,
        "load_before": " ".join(open("/proc/loadavg").read().split()[:3]),
    }


def main():
    ap = argparse.ArgumentParser(
        description="pgwarden vs PgBouncer side by side with pgbench (see bench/README.md).",
        epilog="scenarios: " + ", ".join(SCENARIOS) + ", idle (RSS per idle client), instructions "
        "(callgrind: the poolers' instructions per transaction; needs valgrind)",
    )
    ap.add_argument("--quick", action="store_true", help="1 round, 5 s runs, fewer scenarios, idle 2,000 only")
    ap.add_argument("--rounds", type=int, help="rounds of A B C, each rotated by one (default 3)")
    ap.add_argument("--duration", type=int, help="seconds per measured pgbench run (default 15)")
    ap.add_argument("--warmup", type=int, help="seconds of pgbench before each measured run (default 3)")
    ap.add_argument("--only", help="comma-separated scenarios to run (and/or 'idle', 'instructions')")
    ap.add_argument("--idle-clients", default=None, help="idle client counts (default 2000,10000)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i scale (default 10)")
    ap.add_argument("--out", default=None, help="results directory (default bench/sidebyside/results/<time>)")
    ap.add_argument("--pg-bin", default=os.environ.get("PGWARDEN_PG_BIN", "/usr/lib/postgresql/15/bin"))
    ap.add_argument("--pgbouncer", default=os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer"))
    ap.add_argument("--os-user", default="postgres", help="OS user for PostgreSQL and the poolers when root")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (cluster, configs, logs)")
    ap.add_argument("--render", metavar="RAW_JSON", help="only write report.md again from a run's raw.json")
    opts = ap.parse_args()
    if opts.render:
        with open(opts.render) as f:
            results = json.load(f)
        scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in results["runs"])]
        summary = summarize(results, scenarios)
        text = report(results, summary)
        with open(os.path.join(os.path.dirname(os.path.abspath(opts.render)), "report.md"), "w") as f:
            f.write(text)
        print(text)
        return
    opts.rounds = opts.rounds or (1 if opts.quick else 3)
    opts.duration = opts.duration or (5 if opts.quick else 15)
    opts.warmup = opts.warmup if opts.warmup is not None else (2 if opts.quick else 3)
    idle_counts = [int(x) for x in (opts.idle_clients or ("2000" if opts.quick else "2000,10000")).split(",")]
    if opts.only:
        wanted = opts.only.split(",")
        unknown = [w for w in wanted if w not in SCENARIOS and w not in ("idle", "instructions")]
        if unknown:
            ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    else:
        wanted = (QUICK_SCENARIOS if opts.quick else list(SCENARIOS)) + ["idle"]
        if not opts.quick:
            wanted.append("instructions")
    scenarios = [s for s in SCENARIOS if s in wanted]

    pgwarden = os.environ.get("PGWARDEN_BIN")
    if not pgwarden or not os.access(pgwarden, os.X_OK):
        ap.error("PGWARDEN_BIN must name the pgwarden binary (bench/sidebyside/run.sh builds it)")
    for tool in ("pgbench", "psql", "taskset"):
        if not shutil.which(tool):
            ap.error(f"{tool} not found on PATH")
    if "instructions" in wanted and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        if opts.only:
            ap.error("instructions needs valgrind (apt-get install valgrind)")
        log("valgrind not found: no instructions per transaction in this run (apt-get install valgrind)")
        wanted.remove("instructions")

    # Thousands of idle clients: raise the descriptor limit (inherited by the poolers and pgbench).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = opts.out or os.path.join(HERE, "results", started.replace(":", ""))
    os.makedirs(out, exist_ok=True)
    b = Bench(opts)
    # The unprivileged user must be able to run the binary: copy it into the work directory.
    b.pgwarden = os.path.join(b.work, "pgwarden")
    shutil.copy(pgwarden, b.pgwarden)
    os.chmod(b.pgwarden, 0o755)
    results = {"started": started, "options": vars(opts), "machine": machine(opts, pgwarden), "runs": [],
               "idle": [], "instructions": []}

    def save():
        with open(os.path.join(out, "raw.json"), "w") as f:
            json.dump(results, f, indent=1)

    try:
        b.start_postgres()
        b.write_configs()
        for rnd in range(1, opts.rounds + 1):
            for name in scenarios:
                for target in round_order(SCENARIOS[name]["targets"], rnd):
                    log(f"round {rnd}/{opts.rounds} {name} {target}")
                    try:
                        res = b.run_target(name, SCENARIOS[name], target)
                    except RuntimeError as e:
                        res = {"error": str(e), "clients": SCENARIOS[name]["clients"]}
                    res.update(round=rnd, scenario=name, target=target)
                    msg = f"  tps={res.get('tps')} lat={res.get('latency_ms')} cpu/10k={res.get('cpu_s_per_10k')}"
                    log(msg + (f" ERROR {res['error'].splitlines()[0][:120]}" if res.get("error") else ""))
                    results["runs"].append(res)
                    save()
        if "idle" in wanted:
            for n in idle_counts:
                for target in ("pgbouncer", "pgwarden"):
                    log(f"idle {n} {target}")
                    r = b.idle_rss(target, n)
                    r.update(target=target, clients_asked=n)
                    log(f"  {r['kib_per_client']:.2f} KiB/client ({r['clients']} open, {r['failed']} failed)")
                    results["idle"].append(r)
                    save()
        if "instructions" in wanted:
            for name, run in INSTRUCTION_RUNS.items():
                for target in run["targets"]:
                    log(f"instructions {name} {target} (callgrind)")
                    try:
                        r = b.instructions(name, target)
                    except RuntimeError as e:
                        r = {"error": str(e)}
                    r.update(run=name, target=target)
                    per_tx = r.get("per_tx")
                    log(f"  {per_tx:,.0f} instructions per transaction" if per_tx else f"  ERROR {r.get('error')}")
                    results["instructions"].append(r)
                    save()
    finally:
        results["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
        b.cleanup()
        save()
    summary = summarize(results, scenarios)
    results["summary"] = summary
    save()
    text = report(results, summary)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    print(text)
    log(f"results in {out}")


if __name__ == "__main__":
    main()
