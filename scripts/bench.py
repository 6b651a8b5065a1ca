#!/usr/bin/env python3
"""`make bench`: release builds of accounts and mailer against the local Postgres and RabbitMQ, loaded
with wrk, compared against the targets of issue 7. Prints a table, writes var/bench/results.json and
var/bench/results.svg. All services, the load generator and the SMTP sink share this machine's cores,
so read ratios and medians, not absolutes.

BENCH_E2E_SECONDS (default 120) sets the length of the register-to-mail run.
"""
import html, json, os, re, statistics, subprocess, threading, time

from stack import ACCOUNTS, OUT, PASSWORD, ROOT, Stack, http, psql, rss_mib, sh

E2E_SECONDS = int(os.environ.get("BENCH_E2E_SECONDS", "120"))


def wrk(path, connections, seconds, script=None, token=None):
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        args += ["-s", script]
    if token:
        args += ["-H", f"Authorization: Token {token}"]
    out = sh(*args, f"http://{ACCOUNTS}{path}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "requests": total,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.glob("*.log"):
        f.unlink()
    print("building release binaries ...", flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "accounts", "-p", "mailer"], check=True, cwd=ROOT)
    primitives = json.loads(sh("cargo", "bench", "-q", "-p", "accounts", "--bench", "primitives", cwd=ROOT).strip().splitlines()[-1])
    hash_ms = primitives["bcrypt_hash_ms"]
    cores = os.cpu_count() or 1
    k = max(1, cores - 1)

    stack = Stack()
    accounts, mailer, sink, accounts_db, tag = stack.accounts, stack.mailer, stack.sink, stack.accounts_db, stack.vhost
    results = {"machine": {"cores": cores, "hash_concurrency": k}, "primitives": primitives}
    try:
        # Startup: the first start creates the database; the second finds migrations up to date.
        accounts.start(); accounts.stop()
        mailer.start(); mailer.stop()
        results["startup_s"] = {"accounts": accounts.start(), "mailer": mailer.start()}

        email = f"bench-{tag}@example.com"
        status, body, _ = http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})
        assert status == 201, status
        token = body["user"]["token"]
        login_lua = OUT / "login.lua"
        login_lua.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                             f'wrk.body = \'{{"user":{{"email":"{email}","password":"{PASSWORD}"}}}}\'\n')

        print("login throughput ...", flush=True)
        login = wrk("/api/users/login", 2 * k + 1, 20, script=str(login_lua))
        bound = k * 1000 / hash_ms
        results["login"] = {**login, "bcrypt_bound_rps": bound, "ratio": login["rps"] / bound}

        print("login overload ...", flush=True)
        rss_before = rss_mib(accounts.proc.pid)[0]
        storm = threading.Thread(target=lambda: results.__setitem__("overload_wrk", wrk("/api/users/login", 64, 15, script=str(login_lua))))
        storm.start()
        time.sleep(3)
        probes = [http("POST", "/api/users/login", {"user": {"email": email, "password": PASSWORD}}) for _ in range(40)]
        storm.join()
        rejected = sorted(p[2] * 1000 for p in probes if p[0] == 429)
        results["overload"] = {"probes": len(probes), "rejected_429": len(rejected),
                               "reject_ms_median": statistics.median(rejected) if rejected else None,
                               "reject_ms_max": max(rejected) if rejected else None,
                               "rss_before_mib": rss_before, "rss_after_mib": rss_mib(accounts.proc.pid)[0]}

        print("GET /api/user ...", flush=True)
        results["me"] = wrk("/api/user", 64, 15, token=token)
        print("GET /api/user during a login storm ...", flush=True)
        # Enough connections to keep every bcrypt worker busy and the queue full (the overload run
        # above measures the 64-connection flood of instant 429s on its own).
        storm_connections = 2 * (k + 8 * k)
        results["storm_connections"] = storm_connections
        storm = threading.Thread(target=lambda: wrk("/api/users/login", storm_connections, 17, script=str(login_lua)))
        storm.start()
        time.sleep(1)
        results["me_during_storm"] = wrk("/api/user", 64, 15, token=token)
        storm.join()

        print("outbox relay: 10,000-event backlog ...", flush=True)
        mailer_ready = time.time()
        sent_before = len(sink.arrivals)
        started = time.perf_counter()
        psql(accounts_db, """
            INSERT INTO outbox (event_id, event_type, envelope)
            SELECT id, 'password-changed', jsonb_build_object('id', id, 'type', 'password-changed', 'version', 1,
                'occurred_at', now(), 'data', jsonb_build_object('user_id', id, 'email', 'drain' || n || '@example.com',
                'username', null, 'changed_at', now()))
            FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, 10000) n) g""")
        while int(psql(accounts_db, "SELECT count(*) FROM outbox WHERE published_at IS NULL")) > 0:
            time.sleep(0.05)
        drain_s = time.perf_counter() - started
        results["relay"] = {"events": 10000, "drain_s": drain_s, "events_per_s": 10000 / drain_s}
        while len(sink.arrivals) - sent_before < 10000 and time.time() - mailer_ready < 300:
            time.sleep(0.1)
        drained = [t for r, t in sink.arrivals.items() if r.startswith("drain")]
        mail_s = max(drained) - min(drained) if len(drained) > 1 else float("nan")
        results["mailer"] = {"mails": len(drained), "first_to_last_s": mail_s, "mails_per_s": len(drained) / mail_s}

        print(f"register -> mail at 5/s for {E2E_SECONDS} s ...", flush=True)
        sent = {}
        for i in range(E2E_SECONDS * 5):
            tick = time.perf_counter()
            address = f"e2e{i}-{tag}@example.com"
            status, _, _ = http("POST", "/api/users", {"user": {"email": address, "password": PASSWORD}})
            if status == 201:
                sent[address] = time.time()  # the user and its event are committed: hashing is behind us
            time.sleep(max(0, 0.2 - (time.perf_counter() - tick)))
        deadline = time.time() + 30
        while any(a not in sink.arrivals for a in sent) and time.time() < deadline:
            time.sleep(0.1)
        latencies = sorted((sink.arrivals[a] - t) * 1000 for a, t in sent.items() if a in sink.arrivals)
        results["e2e"] = {"registered": len(sent), "missing": len(sent) - len(latencies),
                          "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(len(latencies) * 0.99) - 1]}
        results["memory_peak_mib"] = {"accounts": rss_mib(accounts.proc.pid)[1], "mailer": rss_mib(mailer.proc.pid)[1]}
    finally:
        stack.close()
    report(results)


def report(r):
    rows = [
        ("login throughput vs bcrypt bound", f"{r['login']['rps']:.1f}/s vs {r['login']['bcrypt_bound_rps']:.1f}/s", r["login"]["ratio"] >= 0.85, f"ratio {r['login']['ratio']:.2f} >= 0.85"),
        ("login overload: 429 latency", f"{r['overload']['rejected_429']}/{r['overload']['probes']} probes 429, median {r['overload']['reject_ms_median'] or 0:.1f} ms, max {r['overload']['reject_ms_max'] or 0:.1f} ms",
         bool(r["overload"]["rejected_429"]) and (r["overload"]["reject_ms_max"] or 999) < 50, "< 50 ms"),
        ("login overload: RSS", f"{r['overload']['rss_before_mib']:.1f} -> {r['overload']['rss_after_mib']:.1f} MiB", r["overload"]["rss_after_mib"] < r["overload"]["rss_before_mib"] * 1.5 + 8, "flat"),
        ("GET /api/user, 64 connections", f"{r['me']['rps']:.0f}/s, p99 {r['me']['p99_ms']:.1f} ms", r["me"]["rps"] >= 5000 and r["me"]["p99_ms"] <= 30, ">= 5000/s, p99 <= 30 ms"),
        ("GET /api/user during login storm", f"{r['me_during_storm']['rps']:.0f}/s, p99 {r['me_during_storm']['p99_ms']:.1f} ms", r["me_during_storm"]["rps"] >= 3000 and r["me_during_storm"]["p99_ms"] <= 30, ">= 3000/s, p99 <= 30 ms"),
        ("token verification (JWKS key)", f"{r['primitives']['jwt_verify_us']:.1f} us", r["primitives"]["jwt_verify_us"] <= 100, "<= 100 us"),
        ("register -> SMTP accepted", f"p50 {r['e2e']['p50_ms']:.0f} ms, p99 {r['e2e']['p99_ms']:.0f} ms, {r['e2e']['missing']} missing of {r['e2e']['registered']}",
         r["e2e"]["p50_ms"] <= 50 and r["e2e"]["p99_ms"] <= 500 and r["e2e"]["missing"] == 0, "p50 <= 50, p99 <= 500, none missing"),
        ("outbox relay, 10,000 backlog", f"{r['relay']['drain_s']:.1f} s ({r['relay']['events_per_s']:.0f} events/s)", r["relay"]["drain_s"] <= 30, "<= 30 s"),
        ("mailer into SMTP sink", f"{r['mailer']['mails_per_s']:.0f} mails/s ({r['mailer']['mails']} mails)", r["mailer"]["mails_per_s"] >= 400, ">= 400/s"),
        ("memory peak", f"accounts {r['memory_peak_mib']['accounts']:.1f} MiB, mailer {r['memory_peak_mib']['mailer']:.1f} MiB",
         r["memory_peak_mib"]["accounts"] <= 64 and r["memory_peak_mib"]["mailer"] <= 48, "accounts <= 64, mailer <= 48"),
        ("startup (migrations up to date)", f"accounts {r['startup_s']['accounts']:.2f} s, mailer {r['startup_s']['mailer']:.2f} s",
         max(r["startup_s"].values()) <= 2, "<= 2 s each"),
    ]
    r["verdicts"] = [{"what": w, "measured": m, "target": t, "met": ok} for w, m, ok, t in rows]
    print(f"\n{'what':38} {'measured':58} {'target':32} verdict")
    for w, m, ok, t in rows:
        print(f"{w:38} {m:58} {t:32} {'met' if ok else 'MISSED'}")
    print(f"\nmachine: {r['machine']['cores']} cores shared by everything above; bcrypt cost {r['primitives']['bcrypt_cost']} = {r['primitives']['bcrypt_hash_ms']:.0f} ms/hash")
    (OUT / "results.json").write_text(json.dumps(r, indent=2))
    (OUT / "results.svg").write_text(svg(rows))
    print(f"wrote {OUT / 'results.json'} and {OUT / 'results.svg'}")


def svg(rows):
    height = 30 * len(rows) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{height}" font-family="sans-serif" font-size="13">']
    for i, (what, measured, ok, target) in enumerate(rows):
        y = 20 + i * 30
        colour = "#2e7d32" if ok else "#c62828"
        parts.append(f'<rect x="0" y="{y - 14}" width="12" height="18" fill="{colour}"/>')
        parts.append(f'<text x="20" y="{y}">{html.escape(f"{what}: {measured} (target {target})")}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


if __name__ == "__main__":
    main()
