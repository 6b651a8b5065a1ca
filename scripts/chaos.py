#!/usr/bin/env python3
"""`make chaos`: failure scenarios on loopback against release builds. Each prints PASS or FAIL with
counts; the whole run is bounded in time and stops by itself. It stops and restarts this machine's
RabbitMQ application and PostgreSQL cluster, so don't run it next to work you care about.

    scripts/chaos.py                  every scenario
    scripts/chaos.py smtp_550_451 …   only those
"""
import json, random, subprocess, sys, threading, time, urllib.request

from stack import ACCOUNTS, AMQP, MAILER, PASSWORD, PG, Stack, http, psql, sh

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
    return verdict("connections killed 4x and a broker restart", alive and not missing and len(created) == len(results),
                   registrations=len(results), missing=len(missing), duplicates=duplicates, processes_alive=alive)


def mailer_kill9(stack):
    stack.mailer.stop()
    emails = outbox_backlog(stack, 2000, f"k9m-{stack.vhost}-")
    kills = 0
    deadline = time.time() + 240
    while time.time() < deadline and any(e not in stack.sink.counts for e in emails):
        stack.mailer.start()
        time.sleep(random.uniform(0.5, 3))
        if kills < 5 and any(e not in stack.sink.counts for e in emails):
            stack.mailer.kill()
            kills += 1
        else:
            break
    missing, duplicates = wait_mailed(stack.sink, emails, 240)
    if stack.mailer.proc.poll() is not None:
        stack.mailer.start()
    return verdict("kill -9 of the mailer during 2,000 events", not missing, events=len(emails), kills=kills,
                   missing=len(missing), duplicates=duplicates)


def accounts_kill9(stack):
    emails = outbox_backlog(stack, 3000, f"k9a-{stack.vhost}-")
    time.sleep(0.3)
    stack.accounts.kill()
    published = int(psql(stack.accounts_db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND event_type = 'password-changed'"))
    stack.accounts.start()
    missing, duplicates = wait_mailed(stack.sink, emails, 180)
    return verdict("kill -9 of accounts in the middle of the relay", not missing, events=len(emails),
                   published_before_kill=published, missing=len(missing), duplicates=duplicates)


def smtp_down(stack):
    stack.sink.stop()
    emails = [register("smtpdown", i, stack.vhost)[0] for i in range(20)]
    time.sleep(SMTP_DOWN_SECONDS)
    attempts = psql(stack.mailer_db, "SELECT coalesce(max(attempts), 0) FROM deliveries WHERE status <> 'sent'")
    failed = int(psql(stack.mailer_db, "SELECT count(*) FROM failed_sends"))
    stack.sink.start()
    # The default schedule (2 s doubling, jittered) has its next attempt within about 130 s.
    missing, duplicates = wait_mailed(stack.sink, emails, 300)
    return verdict(f"SMTP down {SMTP_DOWN_SECONDS} s", not missing and failed == 0 and int(attempts) <= 8,
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
    dead = 0
    for line in sh("rabbitmqctl", "-q", "list_queues", "-p", stack.vhost, "name", "messages").splitlines():
        name, _, count = line.partition("\t")
        if name.strip() == "mailer.dead":
            dead = int(count)
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


SCENARIOS = [broker_outage, connections_killed, mailer_kill9, accounts_kill9, smtp_down, smtp_550_451, poison, postgres_restart]


def main():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "accounts", "-p", "mailer"], check=True)
    chosen = [s for s in SCENARIOS if len(sys.argv) == 1 or s.__name__ in sys.argv[1:]]
    passed = 0
    for scenario in chosen:
        stack = Stack()
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
