#!/usr/bin/env bash
# The OpenAPI document as a contract: schemathesis (pinned, from PyPI, in var/venv) runs every
# operation of accounts' /openapi.json with every check (--checks all), authenticated, against a
# debug build on its own port, database and vhost. Exits non-zero on any failure.
#
# What the run configures rather than skips (see also scripts/schemathesis.toml):
# - Tokens (scripts/schemathesis_hooks.py): each test case registers a user of its own, made
#   superuser with SQL for the admin routes so they run past the permission check. Cases end
#   sessions and deactivate users, so a shared token would die part-way through the run.
# - Throttles: ACCOUNTS_REGISTRATIONS_PER_HOUR=0, and every request comes from its own client
#   address (X-Forwarded-For through ACCOUNTS_TRUSTED_PROXIES=127.0.0.1/32), so the per-client
#   limits (login failures, mail requests) never turn the run into a stream of 429s. The
#   per-account and per-address limits still apply; their 429s are documented and accepted.
# - Mailed tokens are never valid when generated: those routes answer 400, accepted for
#   schema-valid input on them only (the toml lists each rule JSON Schema cannot state).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PORT=${SCHEMATHESIS_PORT:-18280}
PG=${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
AMQP=${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672}

test -x var/venv/bin/python || python3 -m venv var/venv
var/venv/bin/pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
cargo build -q --locked -p accounts
accounts_bin=${CARGO_TARGET_DIR:-target}/debug/accounts

tag=schemathesis_$$
workdir=$(mktemp -d)
# Kept after the run, with schemathesis' JUnit report, for whoever reads a failure.
mkdir -p var/schemathesis
log=var/schemathesis/accounts.log
base=http://127.0.0.1:$PORT
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
  fi
  rabbitmqctl -q delete_vhost "$tag" 2>/dev/null || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS \"$tag\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap cleanup EXIT

rabbitmqctl -q add_vhost "$tag" && rabbitmqctl -q set_permissions -p "$tag" guest '.*' '.*' '.*'
openssl genpkey -algorithm ed25519 -out "$workdir/jwt.pem" 2>/dev/null
head -c 32 /dev/urandom > "$workdir/encryption.key"

ACCOUNTS_ADDR=127.0.0.1:$PORT ACCOUNTS_PUBLIC_URL=$base \
  ACCOUNTS_DATABASE_URL=$PG/$tag AMQP_URL=$AMQP/$tag \
  ACCOUNTS_JWT_KEY_FILE=$workdir/jwt.pem ACCOUNTS_ENCRYPTION_KEY_FILE=$workdir/encryption.key ACCOUNTS_BCRYPT_COST=4 \
  ACCOUNTS_REGISTRATIONS_PER_HOUR=0 ACCOUNTS_TRUSTED_PROXIES=127.0.0.1/32 \
  ACCOUNTS_WEBAUTHN_RP_ID=localhost ACCOUNTS_WEBAUTHN_ORIGINS=http://localhost:$PORT \
  LOG_FORMAT=json RUST_LOG=warn \
  "$accounts_bin" > "$log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
  curl -fsS "$base/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$log"; echo "accounts exited during startup" >&2; exit 1; }
  sleep 0.5
done

started=$(date +%s)
status=0
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts \
  SCHEMATHESIS_BASE_URL=$base SCHEMATHESIS_DATABASE_URL=$PG/$tag SCHEMATHESIS_PASSWORD=Quartz-Violet-8812 \
  var/venv/bin/schemathesis --config-file scripts/schemathesis.toml run "$base/openapi.json" \
  --checks all --no-color --report junit --report-dir var/schemathesis "$@" || status=$?

# A 500 fails the not_a_server_error check already; this catches errors a 4xx answer hid. actix's
# own HTTP parser logs malformed requests (headers schemathesis garbles) at ERROR: not ours.
if grep '"level":"ERROR"' "$log" | grep -qv '"target":"actix_http::'; then
  echo "accounts logged errors during the run:" >&2
  grep '"level":"ERROR"' "$log" | grep -v '"target":"actix_http::' | head -20 >&2
  status=1
fi
echo "schemathesis: $(( $(date +%s) - started )) s, exit $status"
exit $status
