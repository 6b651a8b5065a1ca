"""Authentication for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

Every test case gets a user of its own, registered just before it runs: admin routes get a
superuser (promoted with SQL, as there is no API for it), every other route a plain user. Cases
end sessions (logout, session delete), deactivate users or end all their sessions (admin routes,
fed real ids by the stateful phase's links), so a token shared between cases would die part-way
and turn the rest of the run into 401s.

Every request also comes from its own client address (X-Forwarded-For through the trusted loopback
proxy the script configures), so per-client throttles count one request each. Per-account and
per-address throttles still apply; their 429s are documented.
"""
import itertools
import json
import os
import subprocess
import threading
import urllib.request

import schemathesis

BASE = os.environ["SCHEMATHESIS_BASE_URL"]
DATABASE_URL = os.environ["SCHEMATHESIS_DATABASE_URL"]
PASSWORD = os.environ["SCHEMATHESIS_PASSWORD"]

_counter = itertools.count(1)
_lock = threading.Lock()


def _next() -> int:
    with _lock:
        return next(_counter)


def _client_address(n: int) -> str:
    # 10.0.0.0/8 has room for every request of a run.
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def _register(kind: str) -> dict:
    n = _next()
    body = json.dumps({"user": {"email": f"{kind}-{n}@example.com", "password": PASSWORD}})
    request = urllib.request.Request(
        f"{BASE}/api/users",
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-Forwarded-For": _client_address(n)},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["user"]


def _superuser_token() -> str:
    user = _register("admin")
    subprocess.run(
        ["psql", "-q", DATABASE_URL, "-c", f"UPDATE users SET is_superuser = true WHERE id = '{user['id']}'"],
        check=True,
        capture_output=True,
    )
    # The admin API checks the database, not the token's claims: this token works at once.
    return user["token"]


@schemathesis.auth(refresh_interval=None)
class Tokens:
    def get(self, case, context):
        if case.operation.path.startswith("/api/admin/"):
            return _superuser_token()
        return _register("user")["token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Token {data}"


@schemathesis.hook
def before_call(context, case, **kwargs):
    case.headers = case.headers or {}
    case.headers.setdefault("X-Forwarded-For", _client_address(_next()))
