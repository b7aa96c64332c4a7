#!/usr/bin/env python3
"""Write -> OFREP client on another replica, and failover after a kill, on a throwaway PostgreSQL.

    python3 benches/replicas/propagation.py target/release/sluice [WRITES] [LEASE]

Starts a PostgreSQL cluster (initdb/pg_ctl, as `postgres` when run as root) and two `sluice serve` replicas on
it. An OFREP client of replica 2 listens on /ofrep/v1/events; each write (a ramp change) goes to replica 1.
Latency = from the write's answer (committed) to the refetch event at the client of replica 2. Then the
leader is killed (SIGKILL) and the time until the other replica leads is measured, with the given lease.
Every loop is bounded in count and time; only loopback addresses.
"""
import glob, json, os, shutil, signal, socket, subprocess, sys, tempfile, threading, time, urllib.request

BIN = os.path.abspath(sys.argv[1])
WRITES = int(sys.argv[2]) if len(sys.argv) > 2 else 200
LEASE = sys.argv[3] if len(sys.argv) > 3 else "15s"
ADMIN = "bench-admin-token-0123456789abcdef0123456789"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pg_bin():
    for d in os.environ.get("PATH", "").split(":"):
        if os.path.isfile(os.path.join(d, "initdb")):
            return d
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not found:
        sys.exit("PostgreSQL is not installed (Debian's `postgresql`)")
    return found[-1]


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args


def request(method, url, body=None, token=ADMIN):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(url, data=data, method=method)
    r.add_header("Authorization", f"Bearer {token}")
    r.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(r, timeout=10) as a:
        return json.loads(a.read() or b"null")


def start(name, db):
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--database", db, "--replica-name", name,
                          "--lease", LEASE], env={**os.environ, "SLUICE_ADMIN_TOKEN": ADMIN, "SLUICE_LOG": "warn"},
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if line.startswith("sluice listening on "):
            url = line.split()[3]
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, url
    sys.exit(f"{name} did not start")


def main():
    tmp = tempfile.mkdtemp(prefix="sluice-bench-pg")
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    pgb, port = pg_bin(), free_port()
    data = os.path.join(tmp, "data")
    subprocess.run(as_postgres([f"{pgb}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"]),
                   check=True, stdout=subprocess.DEVNULL)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={tmp}"
    subprocess.run(as_postgres([f"{pgb}/pg_ctl", "-D", data, "-o", opts, "-l", f"{tmp}/log", "-w", "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    procs = []
    try:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "CREATE DATABASE sluice"],
                       check=True, stdout=subprocess.DEVNULL)
        db = f"postgres://postgres@127.0.0.1:{port}/sluice"
        r1, url1 = start("r1", db)
        procs.append(r1)
        time.sleep(0.5)
        r2, url2 = start("r2", db)
        procs.append(r2)
        # A realistic catalog: the HTTP benchmark's 350 flags, when its generator is built.
        flagset = os.path.join(os.path.dirname(BIN), "flagset")
        if os.path.isfile(flagset):
            flags = subprocess.run([flagset], check=True, capture_output=True).stdout
            r = urllib.request.Request(f"{url1}/api/v1/import/flags", data=flags, method="POST")
            r.add_header("Authorization", f"Bearer {ADMIN}")
            r.add_header("Content-Type", "application/json")
            urllib.request.urlopen(r, timeout=30).read()
        request("PUT", f"{url1}/api/v1/flags/bench", {
            "key": "bench", "variants": [{"name": "off", "value": False}, {"name": "on", "value": True}],
            "ramp": {"base": "off", "ramped": "on", "percent": 0, "stickiness": "default", "segments": []}})
        time.sleep(1)
        # The OFREP client of replica 2: its event stream, read line by line on a thread.
        events, lock = [], threading.Condition()

        def listen():
            with urllib.request.urlopen(f"{url2}/ofrep/v1/events", timeout=60) as stream:
                for line in stream:
                    if line.startswith(b"data:"):
                        with lock:
                            events.append(time.perf_counter())
                            lock.notify_all()
        threading.Thread(target=listen, daemon=True).start()
        time.sleep(1)
        lat, whole = [], []
        for i in range(WRITES):
            with lock:
                seen = len(events)
            sent = time.perf_counter()
            request("POST", f"{url1}/api/v1/flags/bench/ramp", {"percent": i % 100 + 1})
            committed = time.perf_counter()
            with lock:
                lock.wait_for(lambda: len(events) > seen, timeout=5)
                if len(events) == seen:
                    print(f"write {i}: no event within 5 s")
                    continue
                lat.append((events[seen] - committed) * 1000)
                whole.append((events[seen] - sent) * 1000)
            time.sleep(0.02)
        for name, xs in (("from the write's answer", lat), ("from sending the write", whole)):
            xs.sort()
            q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
            print(f"write -> OFREP event on the other replica, {name}: n={len(xs)} p50={q(0.5):.2f} ms "
                  f"p99={q(0.99):.2f} ms max={xs[-1]:.2f} ms")
        # Failover: kill the leader, time until the other leads.
        leader = request("GET", f"{url1}/api/v1/status")["data"]["leader"]["replica"]
        victim, other = (r1, url2) if leader == "r1" else (r2, url1)
        victim.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        while time.perf_counter() - killed < 120:
            if request("GET", f"{other}/api/v1/status")["data"]["leading"]:
                break
            time.sleep(0.02)
        print(f"failover after SIGKILL with lease {LEASE}: {time.perf_counter() - killed:.2f} s")
    finally:
        for p in procs:
            p.kill()
        subprocess.run(as_postgres([f"{pgb}/pg_ctl", "-D", data, "-m", "immediate", "stop"]), stdout=subprocess.DEVNULL)
        shutil.rmtree(tmp, ignore_errors=True)


main()
