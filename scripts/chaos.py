#!/usr/bin/env python3
"""`make chaos`: failure scenarios on loopback against release builds. Each prints PASS or FAIL with
counts; the whole run is bounded in time and stops by itself. It stops and restarts this machine's
RabbitMQ application and PostgreSQL cluster, so don't run it next to work you care about.

    scripts/chaos.py                  every scenario
    scripts/chaos.py smtp_550_451 …   only those (make chaos SCENARIOS="scale_out login_flood")

The scenarios after `postgres_restart` stage their faults on their own databases and vhost only (a
per-database outage stands in for a Postgres restart), so they can run next to other work.
"""
import asyncio, json, os, random, statistics, subprocess, sys, threading, time, urllib.request, uuid
from concurrent.futures import ThreadPoolExecutor

from stack import ACCOUNTS, AMQP, BIN, MAILER, OUT, PASSWORD, PG, ROOT, Service, Stack, http, psql, sh

SMTP_DOWN_SECONDS = 120


def register(prefix, i, tag):
    email = f"{prefix}{i}-{tag}@example.com"
    status, _, _ = http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})
    return email, status


def wait_mailed(sink, emails, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline and any(e.lower() not in sink.counts for e in emails):
        time.sleep(0.2)
    missing = [e for e in emails if e.lower() not in sink.counts]
    duplicates = sum(sink.counts.get(e.lower(), 0) - 1 for e in emails if sink.counts.get(e.lower(), 0) > 1)
    return missing, duplicates


def steady_registrations(prefix, tag, seconds, rate=5):
    results = []

    def run():
        for i in range(seconds * rate):
            tick = time.time()
            results.append(register(prefix, i, tag))
            time.sleep(max(0, 1 / rate - (time.time() - tick)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def verdict(name, ok, **counts):
    print(f"{'PASS' if ok else 'FAIL'} {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    return ok


def rabbit(*args):
    sh("rabbitmqctl", "-q", *args)


def outbox_backlog(stack, n, prefix):
    psql(stack.accounts_db, f"""
        INSERT INTO outbox (event_id, event_type, envelope)
        SELECT id, 'password-changed', jsonb_build_object('id', id, 'type', 'password-changed', 'version', 1,
            'occurred_at', now(), 'data', jsonb_build_object('user_id', id, 'email', '{prefix}' || n || '@example.com',
            'username', null, 'changed_at', now()))
        FROM (SELECT gen_random_uuid() AS id, n FROM generate_series(1, {n}) n) g""")
    return [f"{prefix}{i}@example.com" for i in range(1, n + 1)]


def broker_outage(stack):
    thread, results = steady_registrations("outage", stack.vhost, 90)
    time.sleep(10)
    rabbit("stop_app")
    time.sleep(60)
    rabbit("start_app")
    thread.join()
    created = [e for e, s in results if s == 201]
    missing, duplicates = wait_mailed(stack.sink, created, 180)
    return verdict("rabbitmq stopped 60 s under steady registrations", len(created) == len(results) and not missing and not duplicates,
                   registrations=len(results), created=len(created), missing=len(missing), duplicates=duplicates)


def connections_killed(stack):
    thread, results = steady_registrations("killed", stack.vhost, 45)
    for round in range(4):
        time.sleep(8)
        rabbit("close_all_connections", "-p", stack.vhost, "chaos")
        if round == 2:
            rabbit("stop_app")
            time.sleep(3)
            rabbit("start_app")
    thread.join()
    created = [e for e, s in results if s == 201]
    missing, duplicates = wait_mailed(stack.sink, created, 120)
    alive = stack.accounts.proc.poll() is None and stack.mailer.proc.poll() is None
    return verdict("connections killed 4x and a broker restart", alive and not missing and len(created) == len(results) and duplicates == 0,
                   registrations=len(results), missing=len(missing), duplicates=duplicates, allowed_duplicates=0, processes_alive=alive)


def mailer_kill9(stack):
    stack.mailer.stop()
    emails = outbox_backlog(stack, 2000, f"k9m-{stack.vhost}-")
    kills = 0
    deadline = time.time() + 240
    while time.time() < deadline and any(e not in stack.sink.counts for e in emails):
        stack.mailer.start()
        # The mailer sends ~3,000 mails/s: a kill seconds after the start found the work done
        # (kills=0, a scenario that tested nothing). Kill it while the backlog is still draining.
        time.sleep(random.uniform(0.05, 0.3))
        if kills < 5 and any(e not in stack.sink.counts for e in emails):
            stack.mailer.kill()
            kills += 1
        else:
            break
    missing, duplicates = wait_mailed(stack.sink, emails, 240)
    if stack.mailer.proc.poll() is not None:
        stack.mailer.start()
    # The documented window: each kill -9 may resend the mails it had in flight (MAILER_CONCURRENCY).
    allowed = kills * int(stack.mailer.env.get("MAILER_CONCURRENCY", "16"))
    return verdict("kill -9 of the mailer during 2,000 events", kills > 0 and not missing and duplicates <= allowed, events=len(emails), kills=kills,
                   missing=len(missing), duplicates=duplicates, allowed_duplicates=allowed)


def accounts_kill9(stack):
    emails = outbox_backlog(stack, 3000, f"k9a-{stack.vhost}-")
    time.sleep(0.3)
    stack.accounts.kill()
    published = int(psql(stack.accounts_db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND event_type = 'password-changed'"))
    stack.accounts.start()
    missing, duplicates = wait_mailed(stack.sink, emails, 180)
    return verdict("kill -9 of accounts in the middle of the relay", not missing and duplicates == 0, events=len(emails),
                   published_before_kill=published, missing=len(missing), duplicates=duplicates, allowed_duplicates=0)


def smtp_down(stack):
    stack.sink.stop()
    emails = [register("smtpdown", i, stack.vhost)[0] for i in range(20)]
    time.sleep(SMTP_DOWN_SECONDS)
    attempts = psql(stack.mailer_db, "SELECT coalesce(max(attempts), 0) FROM deliveries WHERE status <> 'sent'")
    failed = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends"))
    stack.sink.start()
    # The default schedule (2 s doubling, jittered) has its next attempt within about 130 s.
    missing, duplicates = wait_mailed(stack.sink, emails, 300)
    return verdict(f"SMTP down {SMTP_DOWN_SECONDS} s", not missing and failed == 0 and int(attempts) <= 8 and duplicates == 0,
                   mails=len(emails), max_attempts_while_down=attempts, failed_sends=failed, missing=len(missing), duplicates=duplicates)


def smtp_550_451(stack):
    stack.sink.rules.update({"reject550": "550 5.1.1 No such user", "tempfail451": "451 4.3.0 Try again later"})
    tag = stack.vhost
    rejected, _ = register("reject550-", 1, tag)
    deferred, _ = register("tempfail451-", 1, tag)
    normal, _ = register("normal-", 1, tag)
    missing, _ = wait_mailed(stack.sink, [deferred, normal], 60)
    time.sleep(2)
    row = psql(stack.mailer_db, f"SELECT attempts FROM failed_sends WHERE recipient = '{rejected}'")
    ok = not missing and row == "1" and rejected not in stack.sink.counts
    return verdict("SMTP 550 for one recipient, 451 for another", ok, failed_send_attempts=row or "none",
                   deferred_delivered=deferred in stack.sink.counts, normal_delivered=normal in stack.sink.counts)


def poison(stack):
    import pika

    mailer_ready(stack)
    params = pika.URLParameters(f"{AMQP}/{stack.vhost}")
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    channel.basic_publish("accounts.events", "user-registered", b"{not json", props)
    channel.basic_publish("accounts.events", "user-registered",
                          json.dumps({"id": "00000000-0000-0000-0000-000000000001", "type": "user-exploded", "version": 1,
                                      "occurred_at": "2026-11-23T00:00:00Z", "data": {}}).encode(), props)
    channel.basic_publish("accounts.events", "user-registered", b'{"pad": "' + b"x" * 8_000_000 + b'"}', props)
    connection.close()
    email, _ = register("afterpoison", 1, stack.vhost)
    missing, _ = wait_mailed(stack.sink, [email], 60)
    recorded = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends"))
    dead = queue_depths(stack).get("mailer.dead", 0)
    return verdict("poison messages", not missing and recorded + dead >= 3 and stack.mailer.proc.poll() is None,
                   recorded=recorded, dead_lettered=dead, next_mail_delivered=not missing)


def postgres_restart(stack):
    _, body, _ = http("POST", "/api/users", {"user": {"email": f"pg-{stack.vhost}@example.com", "password": PASSWORD}})
    token = body["user"]["token"]
    cluster = sh("bash", "-c", "ls /etc/postgresql | sort -V | tail -n 1").strip()
    sh("pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "stop", "-m", "fast")
    statuses = set()
    down_until = time.time() + 8
    while time.time() < down_until:
        statuses.add(http("GET", "/api/user", token=token)[0])
        time.sleep(0.25)
    sh("pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start")
    back = time.time()
    recovered = None
    while time.time() - back < 30:
        if http("GET", "/api/user", token=token)[0] == 200:
            recovered = time.time() - back
            break
        time.sleep(0.1)
    email, status = register("afterpg", 1, stack.vhost)
    missing, _ = wait_mailed(stack.sink, [email], 90)
    alive = stack.accounts.proc.poll() is None and stack.mailer.proc.poll() is None
    ok = statuses <= {503} and recovered is not None and recovered <= 5 and status == 201 and not missing and alive
    return verdict("PostgreSQL restarted under load", ok, statuses_while_down=sorted(statuses),
                   recovered_s=None if recovered is None else round(recovered, 2), mail_after=not missing, processes_alive=alive)


# ---------------------------------------------------------------------------------------------------
# Adversarial scenarios (issue 11). Each stays on loopback, is bounded in time, and touches only its own
# databases and vhost (outages are staged per database), so it can run next to other people's tests.

# The duplicate window the mailer README documents: a mail is sent twice only when the sender dies (or its
# database stays away longer than the settle window) between the SMTP 250 and the settle, or when the
# 250 itself comes later than MAILER_SMTP_TIMEOUT_SECS (RFC 1047). None of these scenarios kills a sender,
# so the allowance is the number of late 250s a scenario provokes, and 0 everywhere else.


def amqp_channel(stack):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(f"{AMQP}/{stack.vhost}"))
    return connection, connection.channel()


def queue_depths(stack):
    depth = {}
    for line in sh("rabbitmqctl", "-q", "list_queues", "-p", stack.vhost, "--no-table-headers", "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if count.strip().isdigit():
            depth[name.strip()] = int(count)
    return depth


def wait_until(predicate, timeout, step=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def mixed_outbox(stack, n, prefix):
    """n outbox rows in one statement, alternating user-registered and password-changed; their
    addresses by type."""
    psql(stack.accounts_db, f"""
        INSERT INTO outbox (event_id, event_type, envelope)
        SELECT id, kind, jsonb_build_object('id', id, 'type', kind, 'version', 1, 'occurred_at', now(),
            'data', CASE WHEN kind = 'user-registered' THEN
                jsonb_build_object('user_id', id, 'email', '{prefix}' || n || '@example.com', 'username', null,
                    'confirmation_url', 'http://127.0.0.1:18080/api/users/confirm?token=t' || n,
                    'confirmation_expires_at', now() + interval '1 hour')
            ELSE jsonb_build_object('user_id', id, 'email', '{prefix}' || n || '@example.com', 'username', null,
                    'changed_at', now()) END)
        FROM (SELECT gen_random_uuid() AS id, n,
                     CASE WHEN n % 2 = 0 THEN 'user-registered' ELSE 'password-changed' END AS kind
              FROM generate_series(1, {n}) n) g""")
    registered = [f"{prefix}{i}@example.com" for i in range(1, n + 1) if i % 2 == 0]
    changed = [f"{prefix}{i}@example.com" for i in range(1, n + 1) if i % 2 == 1]
    return registered, changed


def mailer_ready(stack, timeout=60):
    """Waits until the mailer has declared its topology and consumes (/readyz)."""
    return wait_until(lambda: http("GET", "/readyz", base=MAILER)[0] == 200, timeout)


def bound_keys(stack):
    lines = sh("rabbitmqctl", "-q", "list_bindings", "-p", stack.vhost, "source_name", "destination_name", "routing_key").splitlines()
    return {line.split("\t")[2] for line in lines if line.startswith("accounts.events\tmailer\t")}


def unbound_type_in_burst(stack):
    """A type nobody binds (as when accounts ships a new event before the mailer): its events wait in
    the outbox, the others flow; once bound, each arrives exactly once."""
    mailer_ready(stack)
    connection, channel = amqp_channel(stack)
    channel.queue_unbind("mailer", "accounts.events", "password-changed")
    if "password-changed" in bound_keys(stack):
        return verdict("an unbound type during a mixed burst, then bound", False, error="could not unbind password-changed")
    registered, changed = mixed_outbox(stack, 1000, f"unbound-{stack.vhost}-")
    missing_first, dup_first = wait_mailed(stack.sink, registered, 120)
    waited = wait_until(lambda: int(psql(stack.accounts_db,
        "SELECT count(*) FROM outbox WHERE event_type = 'password-changed' AND published_at IS NULL AND attempts >= 1")) == len(changed), 60)
    lost = int(psql(stack.accounts_db, "SELECT count(*) FROM outbox WHERE event_type = 'password-changed' AND published_at IS NOT NULL"))
    early = sum(1 for e in changed if e.lower() in stack.sink.counts)
    channel.queue_bind("mailer", "accounts.events", "password-changed")
    connection.close()
    missing, duplicates = wait_mailed(stack.sink, registered + changed, 400)
    ok = not missing_first and waited and lost == 0 and early == 0 and not missing and duplicates == 0
    return verdict("an unbound type during a mixed burst, then bound", ok, events=len(registered) + len(changed),
                   unbound=len(changed), routable_missing_before_bind=len(missing_first), unbound_marked_published=lost,
                   unbound_mailed_before_bind=early,
                   unbound_waiting_in_outbox=waited, missing=len(missing), duplicates=duplicates, allowed_duplicates=0)


class SlowSink:
    """A loopback SMTP server that answers the end of DATA late for chosen recipients (once each), and
    with 550 for others. A late reply whose client has gone is discarded, as a server that notices the
    lost connection before committing does; if it has not noticed, the mail counts (the RFC 1047 case)."""

    def __init__(self, port, slow, rejected, delay):
        from aiosmtpd.controller import Controller

        self.counts, self.late, self.rejected_rcpt = {}, 0, 0
        pending_slow = set(slow)
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):
                if address.lower() in rejected:
                    sink.rejected_rcpt += 1
                    return "550 5.1.1 No such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                rcpts = [r.lower() for r in envelope.rcpt_tos]
                if any(r in pending_slow for r in rcpts):
                    pending_slow.difference_update(rcpts)
                    sink.late += 1
                    await asyncio.sleep(delay)
                    if server.transport is None or server.transport.is_closing():
                        return "451 4.4.2 Connection lost"
                for rcpt in rcpts:
                    sink.counts[rcpt] = sink.counts.get(rcpt, 0) + 1
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()

    def stop(self):
        self.controller.stop()


def smtp_slower_than_timeout(stack):
    """Some replies come after MAILER_SMTP_TIMEOUT_SECS, interleaved with 550s on the same connections:
    a late reply must never be read by the next mail (no 550 recorded as sent, no extra duplicates)."""
    from stack import SMTP_PORT

    mailer_ready(stack)
    stack.sink.stop()
    tag = stack.vhost
    emails = [f"slow{i}-{tag}@example.com" for i in range(60)]
    slow = {e.lower() for e in emails[::6]}
    rejected = {e.lower() for e in emails[3::6]}
    sink = SlowSink(SMTP_PORT, slow, rejected, delay=3.5)
    stack.sink = sink
    try:
        for email in emails:
            http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})
        deliverable = [e for e in emails if e.lower() not in rejected]
        missing, duplicates = wait_mailed(sink, deliverable, 180)
        wait_until(lambda: int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends")) >= len(rejected), 60)
        time.sleep(4)
        missing, duplicates = wait_mailed(sink, deliverable, 1)
        rejected_sent = sum(1 for e in rejected if e in sink.counts)
        rejected_marked_sent = int(psql(stack.mailer_db,
            "SELECT count(*) FROM deliveries WHERE status = 'sent' AND recipient IN ("
            + ",".join(f"'{e}'" for e in rejected) + ")"))
        failed = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends WHERE error LIKE '%550%'"))
    finally:
        sink.stop()
        stack.sink = type("Stopped", (), {"stop": lambda self: None})()
    ok = not missing and duplicates <= sink.late and rejected_sent == 0 and rejected_marked_sent == 0 and failed == len(rejected)
    return verdict("SMTP replies slower than the timeout, between 550s", ok, mails=len(emails), late_replies=sink.late,
                   rejected=len(rejected), rejected_recorded_sent=rejected_marked_sent, failed_sends_550=failed,
                   missing=len(missing), duplicates=duplicates, allowed_duplicates=sink.late)
smtp_slower_than_timeout.mailer_env = {"MAILER_SMTP_TIMEOUT_SECS": "1", "MAILER_RETRY_BASE_MS": "200", "MAILER_CONCURRENCY": "4"}


def binary_poison(stack):
    """Raw bytes the mailer cannot record as an event: NUL, invalid UTF-8, \\u0000 in valid JSON, a newer
    major version. Each is kept in failed_sends byte for byte and dead-lettered; the next mail flows."""
    import pika

    mailer_ready(stack)
    connection, channel = amqp_channel(stack)
    props = lambda: pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=str(uuid.uuid4()))
    escaped = json.dumps({"id": str(uuid.uuid4()), "type": "password-changed", "version": 1, "occurred_at": "2026-11-23T00:00:00Z",
                          "data": {"user_id": str(uuid.uuid4()), "email": "nul@example.com", "username": "a\u0000b",
                                   "changed_at": "2026-11-23T00:00:00Z"}}).encode()
    future = json.dumps({"id": str(uuid.uuid4()), "type": "password-changed", "version": 2, "occurred_at": "2026-11-23T00:00:00Z",
                         "data": {}}).encode()
    bodies = [b"\x00\x01\x02 binary \xff\xfe", b"{\"id\": \"\x00\"}", b"\xc3\x28 not utf-8", escaped, future, os.urandom(4096)]
    for body in bodies:
        channel.basic_publish("accounts.events", "password-changed", body, props())
    connection.close()
    email, _ = register("afterbinary", 1, stack.vhost)
    missing, _ = wait_mailed(stack.sink, [email], 60)
    intact = 0
    for body in bodies:
        intact += int(psql(stack.mailer_db, f"SELECT count(*) FROM failed_sends WHERE encode(body, 'hex') = '{body.hex()}'"))
    depth = queue_depths(stack)
    ok = not missing and intact == len(bodies) and depth.get("mailer.dead") == len(bodies) and depth.get("mailer") == 0
    return verdict("binary poison messages", ok, poison=len(bodies), recorded_byte_for_byte=intact,
                   dead_lettered=depth.get("mailer.dead"), mailer_queue=depth.get("mailer"), next_mail_delivered=not missing)


def concurrent_operator_retries(stack):
    """Failed sends retried by two operators at once (the real CLI, concurrently): one mail each."""
    tag = stack.vhost
    emails = [f"opretry{i}-{tag}@example.com" for i in range(20)]
    stack.sink.rules.update({e: "451 4.3.0 Try again later" for e in emails})
    for email in emails:
        http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})
    wait_until(lambda: int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends WHERE resolved_at IS NULL")) == len(emails), 120)
    ids = psql(stack.mailer_db, "SELECT id FROM failed_sends WHERE resolved_at IS NULL ORDER BY id").split()
    binary = str(BIN / "mailer")
    env = {**os.environ, **stack.mailer.env, "RUST_LOG": "error"}

    def retry(id):
        return subprocess.run([binary, "failed", "retry", id], env=env, capture_output=True, text=True).returncode

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(retry, [i for id in ids for i in (id, id)]))
    accepted = codes.count(0)
    missing, duplicates = wait_mailed(stack.sink, emails, 120)
    time.sleep(3)
    missing, duplicates = wait_mailed(stack.sink, emails, 1)
    ok = len(ids) == len(emails) and accepted == len(ids) and not missing and duplicates == 0
    return verdict("two concurrent operator retries per failed send", ok, failed_sends=len(ids), retries=len(codes),
                   retries_accepted=accepted, missing=len(missing), duplicates=duplicates, allowed_duplicates=0)
concurrent_operator_retries.mailer_env = {"MAILER_MAX_ATTEMPTS": "1"}


def set_connectable(db, connectable):
    psql("postgres", f'ALTER DATABASE "{db}" WITH ALLOW_CONNECTIONS {str(connectable).lower()}')
    if not connectable:
        psql("postgres", f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}'")


def postgres_restart_while_settling(stack):
    """The mailer's database goes away (every connection terminated, new ones refused, as in a restart)
    for 4 s, three times, while 1,000 mails are being sent and settled. Settles are retried within the
    lease, so nothing is lost and nothing is sent twice. Staged on the mailer's own database only."""
    emails = outbox_backlog(stack, 1000, f"pgsettle-{stack.vhost}-")
    outages = 0
    wait_until(lambda: len(stack.sink.counts) >= 50, 60, 0.05)
    for _ in range(3):
        set_connectable(stack.mailer_db, False)
        outages += 1
        time.sleep(4)
        set_connectable(stack.mailer_db, True)
        time.sleep(2)
    missing, duplicates = wait_mailed(stack.sink, emails, 240)
    time.sleep(2)
    missing, duplicates = wait_mailed(stack.sink, emails, 1)
    sent = int(psql(stack.mailer_db, "SELECT count(*) FROM deliveries WHERE status = 'sent'"))
    alive = stack.mailer.proc.poll() is None
    ok = not missing and duplicates == 0 and sent == len(emails) and alive
    return verdict("the mailer's Postgres restarted 3x while settling", ok, mails=len(emails), outages=outages,
                   sent_rows=sent, missing=len(missing), duplicates=duplicates, allowed_duplicates=0, mailer_alive=alive)


def scale_out(stack):
    """2 accounts and 3 mailers on one database per service and one broker: 2,000 registrations, exactly
    2,000 mails."""
    extra = []
    for i, port in enumerate((18082,)):
        env = {**stack.accounts.env, "ACCOUNTS_ADDR": f"127.0.0.1:{port}"}
        extra.append(Service("accounts", env, f"127.0.0.1:{port}"))
    for port in (18083, 18085):
        env = {**stack.mailer.env, "MAILER_ADDR": f"127.0.0.1:{port}"}
        extra.append(Service("mailer", env, f"127.0.0.1:{port}"))
    for service in extra:
        service.start()
    bases = [ACCOUNTS, "127.0.0.1:18082"]
    tag = stack.vhost
    emails = [f"scale{i}-{tag}@example.com" for i in range(2000)]
    throttled = [0]

    def register_one(i):
        # A client that honours 429 + Retry-After, as the API asks.
        for _ in range(10):
            status = http("POST", "/api/users", {"user": {"email": emails[i], "password": PASSWORD}}, base=bases[i % 2])[0]
            if status != 429:
                return status
            throttled[0] += 1
            time.sleep(0.2)
        return status

    try:
        started = time.time()
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(register_one, range(len(emails))))
        registered_s = time.time() - started
        created = [e for e, s in zip(emails, statuses) if s == 201]
        missing, duplicates = wait_mailed(stack.sink, created, 300)
        time.sleep(3)
        missing, duplicates = wait_mailed(stack.sink, created, 1)
        total = sum(stack.sink.counts.get(e.lower(), 0) for e in emails)
    finally:
        for service in extra:
            if service.proc.poll() is None:
                service.stop()
    ok = len(created) == len(emails) and not missing and duplicates == 0 and total == len(emails)
    return verdict("scale-out: 2 accounts, 3 mailers, 2,000 registrations", ok, registrations=len(emails), created=len(created),
                   register_s=round(registered_s, 1), retried_429=throttled[0], mails=total, missing=len(missing), duplicates=duplicates, allowed_duplicates=0)
scale_out.accounts_env = {"ACCOUNTS_BCRYPT_COST": "4", "ACCOUNTS_REGISTRATIONS_PER_HOUR": "0", "ACCOUNTS_HASH_QUEUE": "64"}
# 3 mailers x (8 + 4) and 2 accounts x 16 connections stay well under Postgres' default 100.
scale_out.mailer_env = {"MAILER_CONCURRENCY": "8"}


def login_flood(stack):
    """200 concurrent logins for 60 s (real bcrypt cost) while a signed-in user keeps calling GET /api/user,
    which must still be served: every probe 200, p99 under 1 s."""
    tag = stack.vhost
    users = [f"flood{i}-{tag}@example.com" for i in range(20)]
    for email in users:
        http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})
    _, body, _ = http("POST", "/api/users/login", {"user": {"email": users[0], "password": PASSWORD}})
    token = body["user"]["token"]
    stop = time.time() + 60
    logins = {}
    probes = []
    lock = threading.Lock()

    def flood(i):
        while time.time() < stop:
            status = http("POST", "/api/users/login", {"user": {"email": users[i % len(users)], "password": PASSWORD}})[0]
            with lock:
                logins[status] = logins.get(status, 0) + 1

    def probe():
        while time.time() < stop:
            status, _, elapsed = http("GET", "/api/user", token=token)
            probes.append((status, elapsed))
            time.sleep(0.1)

    threads = [threading.Thread(target=flood, args=(i,)) for i in range(200)] + [threading.Thread(target=probe)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = sum(1 for s, _ in probes if s == 200)
    latencies = sorted(e for _, e in probes)
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else None
    ok = probes and served == len(probes) and p99 is not None and p99 < 1.0 and stack.accounts.proc.poll() is None
    return verdict("login flood: 200 concurrent logins for 60 s", ok, logins=sum(logins.values()),
                   login_statuses=dict(sorted(logins.items())), user_probes=len(probes), user_served=served,
                   user_p50_ms=round(statistics.median(latencies) * 1000) if latencies else None,
                   user_p99_ms=round(p99 * 1000) if p99 else None)


# The SMTP servers and database paths that production has and loopback does not (issue 18). Each swaps in
# its own SMTP server (the testkit one, as `smtp-sink` with options) or a proxy of its own in front of
# the mailer's database; none touches a shared service.

def register_many(stack, prefix, n, workers=16):
    """Registers n users (honouring 429 + Retry-After); returns the addresses created."""
    emails = [f"{prefix}{i}-{stack.vhost}@example.com" for i in range(n)]

    def register_one(email):
        for _ in range(10):
            status = http("POST", "/api/users", {"user": {"email": email, "password": PASSWORD}})[0]
            if status != 429:
                return status
            time.sleep(0.2)
        return status

    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = list(pool.map(register_one, emails))
    return [e for e, s in zip(emails, statuses) if s == 201]


def swap_sink(stack, *options):
    from stack import SMTP_PORT, TestkitSmtpSink

    stack.sink.stop()
    stack.sink = TestkitSmtpSink(SMTP_PORT, options)
    return stack.sink


def one_mail_per_connection(stack, n=int(os.environ.get("CHAOS_ONE_MAIL_REGISTRATIONS", "3000"))):
    """An SMTP server that takes one mail per connection and then closes it (a common provider limit):
    every pooled connection is closed under the mailer. 3,000 registrations, 0 in failed_sends, none
    needing a second attempt."""
    mailer_ready(stack)
    sink = swap_sink(stack, "--mails-per-connection", "1")
    started = time.time()
    created = register_many(stack, "onemail", n)
    missing, duplicates = wait_mailed(sink, created, 600)
    elapsed = time.time() - started
    time.sleep(2)
    missing, duplicates = wait_mailed(sink, created, 1)
    failed = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends"))
    retried = int(psql(stack.mailer_db, "SELECT count(*) FROM deliveries WHERE attempts > 1"))
    ok = len(created) == n and not missing and failed == 0 and retried == 0 and duplicates == 0
    return verdict("one mail per SMTP connection", ok, registrations=n, created=len(created), mailed=len(created) - len(missing),
                   failed_sends=failed, needing_a_second_attempt=retried, missing=len(missing), duplicates=duplicates,
                   allowed_duplicates=0, seconds=round(elapsed, 1))
one_mail_per_connection.accounts_env = {"ACCOUNTS_BCRYPT_COST": "4", "ACCOUNTS_HASH_QUEUE": "64"}
one_mail_per_connection.mailer_env = {"MAILER_CONCURRENCY": "16"}


def greylisting_retry(stack, n=20):
    """The SMTP server is down until every mail has used its attempts; it comes back greylisting (451 on
    each recipient's first contact, RFC 6647), and an operator runs `mailer failed retry --all`: each
    row starts a fresh schedule, so every one is delivered after one greylisted attempt, and each row
    keeps its history (the earlier failure, then the retry)."""
    mailer_ready(stack)
    stack.sink.stop()
    stack.sink = type("Stopped", (), {"stop": lambda self: None})()
    created = register_many(stack, "greylist", n, workers=4)
    wait_until(lambda: int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends WHERE resolved_at IS NULL")) == len(created), 120)
    failed = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends WHERE resolved_at IS NULL"))
    sink = swap_sink(stack, "--greylist")
    env = {**os.environ, **stack.mailer.env, "RUST_LOG": "error"}
    retry = subprocess.run([str(BIN / "mailer"), "failed", "retry", "--all"], env=env, capture_output=True, text=True)
    missing, duplicates = wait_mailed(sink, created, 120)
    time.sleep(2)
    back = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends WHERE resolved_at IS NULL"))
    greylisted = int(psql(stack.mailer_db, "SELECT count(*) FROM deliveries WHERE status = 'sent' AND attempts = 2"))
    with_history = int(psql(stack.mailer_db, """SELECT count(*) FROM failed_sends
        WHERE history->0->>'what' = 'failed' AND history->1->>'what' = 'retried'"""))
    ok = (len(created) == n and failed == n and retry.returncode == 0 and not missing and back == 0
          and greylisted == n and with_history == n and duplicates == 0)
    return verdict("greylisting server, then mailer failed retry --all", ok, failed_sends=failed, retry_exit=retry.returncode,
                   delivered=len(created) - len(missing), came_back=back, sent_on_second_attempt=greylisted,
                   rows_with_history=with_history, missing=len(missing), duplicates=duplicates, allowed_duplicates=0)
greylisting_retry.mailer_env = {"MAILER_MAX_ATTEMPTS": "2", "MAILER_RETRY_BASE_MS": "500"}
greylisting_retry.accounts_env = {"ACCOUNTS_BCRYPT_COST": "4"}


class FreezingProxy:
    """A TCP proxy on loopback in front of Postgres whose open connections can be frozen for good: the
    server's bytes stop reaching the client, the client's still go through, and nobody closes anything,
    as when the network path under a connection dies. Connections opened later pass."""

    def __init__(self, upstream_port=5432):
        import socket

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream_port, self.frozen, self.connections, self.lock = upstream_port, set(), [], threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                cid = len(self.connections)
                self.connections.append((client, server))
            threading.Thread(target=self.pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, cid), daemon=True).start()

    def pipe(self, source, target, cid):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            while cid is not None and cid in self.frozen:
                time.sleep(0.05)
            try:
                target.sendall(data)
            except OSError:
                return

    def freeze_open_connections(self):
        with self.lock:
            self.frozen.update(range(len(self.connections)))
            return len(self.connections)

    def close(self):
        self.listener.close()


def frozen_database_connection(stack, n=300):
    """Every database connection the mailer holds freezes mid-run (half-open: no reset, no answer), while
    registrations keep coming. The mailer notices within its statement deadline, opens new connections,
    and mail keeps flowing: nothing lost, nothing sent twice."""
    proxy = FreezingProxy()
    stack.mailer.stop()
    stack.mailer.env["MAILER_DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:{proxy.port}/{stack.mailer_db}"
    stack.mailer.start()
    try:
        mailer_ready(stack)
        thread, results = steady_registrations("frozen", stack.vhost, 60, rate=5)
        time.sleep(15)
        frozen = proxy.freeze_open_connections()
        frozen_at = time.time()
        thread.join()
        created = [e for e, s in results if s == 201]
        missing, duplicates = wait_mailed(stack.sink, created, 120)
        time.sleep(3)
        missing, duplicates = wait_mailed(stack.sink, created, 1)
        after = [e for e in created if stack.sink.arrivals.get(e.lower(), 0) > frozen_at]
        alive = stack.mailer.proc.poll() is None
    finally:
        stack.mailer.stop()
        proxy.close()
    ok = created and not missing and duplicates == 0 and after and alive
    return verdict("the mailer's database connections frozen mid-run", ok, registrations=len(results), created=len(created),
                   connections_frozen=frozen, mailed_after_the_freeze=len(after), missing=len(missing), duplicates=duplicates,
                   allowed_duplicates=0, mailer_alive=alive)
frozen_database_connection.accounts_env = {"ACCOUNTS_BCRYPT_COST": "4"}
frozen_database_connection.mailer_env = {"MAILER_DATABASE_STATEMENT_TIMEOUT_MS": "2000"}


SCENARIOS = [broker_outage, connections_killed, mailer_kill9, accounts_kill9, smtp_down, smtp_550_451, poison, postgres_restart,
             unbound_type_in_burst, smtp_slower_than_timeout, binary_poison, concurrent_operator_retries,
             postgres_restart_while_settling, scale_out, login_flood, one_mail_per_connection, greylisting_retry,
             frozen_database_connection]


def main():
    # Service logs go to var/bench/, which a clean clone does not have yet.
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "accounts", "-p", "mailer"], check=True, cwd=ROOT)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "testkit", "--example", "smtp-sink"], check=True, cwd=ROOT)
    chosen = [s for s in SCENARIOS if len(sys.argv) == 1 or s.__name__ in sys.argv[1:]]
    passed = 0
    for scenario in chosen:
        stack = Stack(accounts_env={"ACCOUNTS_REGISTRATIONS_PER_HOUR": "0", **getattr(scenario, "accounts_env", {})},
                      mailer_env=getattr(scenario, "mailer_env", None))
        try:
            stack.accounts.start()
            stack.mailer.start()
            passed += bool(scenario(stack))
        except Exception as e:  # a scenario that breaks is a FAIL, and the others still run
            verdict(scenario.__name__, False, error=repr(e))
        finally:
            stack.close()
    print(f"\n{passed}/{len(chosen)} scenarios passed")
    sys.exit(0 if passed == len(chosen) else 1)


if __name__ == "__main__":
    main()
