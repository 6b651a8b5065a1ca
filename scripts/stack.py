"""Shared by bench.py and chaos.py: start the release binaries on their own databases and vhost,
an SMTP sink on loopback that timestamps (or refuses) mail, and small HTTP/SQL helpers."""
import json, os, signal, subprocess, sys, tempfile, time, urllib.request, uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
# Where cargo puts the release binaries (CARGO_TARGET_DIR, relative to the repository, or target/).
BIN = ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "release"
PG = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
AMQP = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
ACCOUNTS = "127.0.0.1:18080"
MAILER = "127.0.0.1:18081"
SMTP_PORT = 12525
PASSWORD = "bench-pass-1234"


def sh(*args, **kw):
    return subprocess.run(args, check=True, text=True, capture_output=True, **kw).stdout


def psql(db, sql):
    return sh("psql", f"{PG}/{db}", "-Atc", sql).strip()


def http(method, path, body=None, token=None, base=ACCOUNTS, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://{base}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Token {token}")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null"), time.perf_counter() - started
    except urllib.error.HTTPError as e:
        return e.code, None, time.perf_counter() - started


def rss_mib(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class SmtpSink:
    """A loopback SMTP server (aiosmtpd) that timestamps and counts every accepted message by
    recipient. `rules` maps a recipient substring to a reply: "550 ..." always, or "451 ..." once."""

    def __init__(self, port, rules=None):
        from aiosmtpd.controller import Controller

        self.port, self.rules = port, dict(rules or {})
        self.arrivals, self.counts, self.refused = {}, {}, {}
        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, options):
                for needle, reply in list(sink.rules.items()):
                    if needle in address:
                        sink.refused[address] = sink.refused.get(address, 0) + 1
                        if reply.startswith("451"):
                            del sink.rules[needle]
                        return reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                now = time.time()
                for rcpt in envelope.rcpt_tos:
                    rcpt = rcpt.lower()
                    sink.arrivals.setdefault(rcpt, now)
                    sink.counts[rcpt] = sink.counts.get(rcpt, 0) + 1
                return "250 OK"

        self.handler = Handler()
        self.controller = None
        self.start()

    def start(self):
        from aiosmtpd.controller import Controller

        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        self.controller.stop()


class TestkitSmtpSink:
    """The testkit SMTP server (the `smtp-sink` example, built in release) on loopback: accepts everything and
    timestamps each message by recipient as it is accepted. Much faster than aiosmtpd, and outside
    this process, so a load run measures the mailer, not the sink or Python's GIL. No refusal rules."""

    def __init__(self, port, options=()):
        import threading

        self.port, self.arrivals, self.counts = port, {}, {}
        self.proc = subprocess.Popen([str(BIN / "examples" / "smtp-sink"), str(port), *options], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            sys.exit(f"smtp-sink did not start on port {port}")
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        for line in self.proc.stdout:
            at, _, rcpt = line.rstrip("\n").partition(" ")
            self.arrivals.setdefault(rcpt, float(at))
            self.counts[rcpt] = self.counts.get(rcpt, 0) + 1

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Service:
    def __init__(self, name, env, health):
        self.name, self.env, self.health = name, env, health
        self.proc = None

    def start(self):
        started = time.perf_counter()
        self.proc = subprocess.Popen([str(BIN / self.name)], env={**os.environ, **self.env},
                                     stdout=subprocess.DEVNULL, stderr=open(OUT / f"{self.name}.log", "a"))
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.health}/healthz", timeout=1):
                    return time.perf_counter() - started
            except Exception:
                if self.proc.poll() is not None:
                    sys.exit(f"{self.name} exited during startup; see {OUT / (self.name + '.log')}")
                time.sleep(0.01)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


class Stack:
    """A vhost, two databases, a signing key, an SMTP sink, and the two services configured on them."""

    def __init__(self, smtp_rules=None, accounts_env=None, mailer_env=None, testkit_sink=False):
        tag = uuid.uuid4().hex[:8]
        self.vhost, self.accounts_db, self.mailer_db = f"bench_{tag}", f"bench_accounts_{tag}", f"bench_mailer_{tag}"
        sh("rabbitmqctl", "add_vhost", self.vhost)
        sh("rabbitmqctl", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.keydir = Path(tempfile.mkdtemp())
        sh("openssl", "genpkey", "-algorithm", "ed25519", "-out", str(self.keydir / "k.pem"))
        (self.keydir / "encryption.key").write_bytes(os.urandom(32))
        assert not (testkit_sink and smtp_rules), "the testkit sink accepts everything"
        self.sink = TestkitSmtpSink(SMTP_PORT) if testkit_sink else SmtpSink(SMTP_PORT, smtp_rules)
        common = {"AMQP_URL": f"{AMQP}/{self.vhost}", "RUST_LOG": "warn", "LOG_FORMAT": "json"}
        self.accounts = Service("accounts", {**common, "ACCOUNTS_DATABASE_URL": f"{PG}/{self.accounts_db}",
                                             "ACCOUNTS_ADDR": ACCOUNTS, "ACCOUNTS_PUBLIC_URL": f"http://{ACCOUNTS}",
                                             "ACCOUNTS_JWT_KEY_FILE": str(self.keydir / "k.pem"),
                                             "ACCOUNTS_ENCRYPTION_KEY_FILE": str(self.keydir / "encryption.key"),
                                             # Load and fault runs register from one address.
                                             "ACCOUNTS_REGISTRATIONS_PER_HOUR": "0",
                                             "ACCOUNTS_OUTBOX_POLL_MS": "1000", **(accounts_env or {})}, ACCOUNTS)
        self.mailer = Service("mailer", {**common, "MAILER_DATABASE_URL": f"{PG}/{self.mailer_db}", "MAILER_ADDR": MAILER,
                                         "MAILER_SMTP_URL": f"smtp://127.0.0.1:{SMTP_PORT}", "MAILER_CONCURRENCY": "32",
                                         **(mailer_env or {})}, MAILER)

    def close(self):
        for service in (self.accounts, self.mailer):
            if service.proc and service.proc.poll() is None:
                service.stop()
        self.sink.stop()
        subprocess.run(["rabbitmqctl", "delete_vhost", self.vhost], capture_output=True)
        for db in (self.accounts_db, self.mailer_db):
            subprocess.run(["psql", f"{PG}/postgres", "-qc", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], capture_output=True)
