#!/usr/bin/env bash
# `make run`: the whole stack on this machine, without Docker. Reuses PostgreSQL, RabbitMQ and a
# running mail catcher when they answer; starts what is missing; stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
MAIL_WEB_PORT=${MAIL_WEB_PORT:-1080}
MAIL_SMTP_PORT=${MAIL_SMTP_PORT:-1025}
export ACCOUNTS_ADDR=${ACCOUNTS_ADDR:-127.0.0.1:8080}
export ACCOUNTS_PUBLIC_URL=${ACCOUNTS_PUBLIC_URL:-http://localhost:8080}
export MAILER_ADDR=${MAILER_ADDR:-127.0.0.1:8081}
export MAILER_SMTP_URL=${MAILER_SMTP_URL:-smtp://127.0.0.1:$MAIL_SMTP_PORT}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export RUST_LOG=${RUST_LOG:-info}

say() { printf '\033[1m[run]\033[0m %s\n' "$*"; }
reachable() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

scripts/services.sh

pids=()
stop() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    say "stopping ${#pids[@]} process(es) started by make run"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop INT TERM EXIT

# Prefixes each line of a process's output with a coloured name.
prefixed() { # name colour command...
  local name=$1 colour=$2
  shift 2
  "$@" > >(sed -u "s/^/\x1b[${colour}m${name} |\x1b[0m /") 2>&1 &
  pids+=($!)
}

if reachable 127.0.0.1 "$MAIL_WEB_PORT"; then
  say "reusing the mail catcher already on :$MAIL_WEB_PORT"
else
  if [ ! -x var/tools/node_modules/.bin/maildev ]; then
    command -v npm >/dev/null || { say "npm is missing: install Node.js (Debian: nodejs npm) for the MailDev mail catcher"; exit 1; }
    say "installing MailDev into var/tools (npm registry)"
    npm install --silent --no-fund --no-audit --prefix var/tools maildev@3 >/dev/null
  fi
  prefixed maildev 35 var/tools/node_modules/.bin/maildev --ip 127.0.0.1 --web-ip 127.0.0.1 \
    --smtp "$MAIL_SMTP_PORT" --web "$MAIL_WEB_PORT"
fi

say "building accounts and mailer ($PROFILE)"
if [ "$PROFILE" = release ]; then cargo build --release -p accounts -p mailer; else cargo build -p accounts -p mailer; fi
bin=${CARGO_TARGET_DIR:-target}/$PROFILE

prefixed accounts 36 "$bin/accounts"
prefixed mailer 33 "$bin/mailer"

for _ in $(seq 1 60); do
  reachable 127.0.0.1 "${ACCOUNTS_ADDR##*:}" && reachable 127.0.0.1 "${MAILER_ADDR##*:}" && break
  sleep 0.5
done

cat <<MSG

  accounts API    $ACCOUNTS_PUBLIC_URL/api/users        (JWKS: $ACCOUNTS_PUBLIC_URL/.well-known/jwks.json)
  API docs        $ACCOUNTS_PUBLIC_URL/docs
  mail catcher    http://127.0.0.1:$MAIL_WEB_PORT
  metrics         $ACCOUNTS_PUBLIC_URL/metrics   http://$MAILER_ADDR/metrics
  mailer admin    http://$MAILER_ADDR/admin/failed-sends   (a token with mail.read)

  The first administrator (in another terminal; the password is prompted, never an argument):
    $bin/accounts create-superuser --email you@example.com
  then sign in with POST /api/users/login and use /api/admin/... with the token.

  Ctrl-C stops what make run started.

MSG
wait -n "${pids[@]}" || true
say "a process exited; stopping the rest"
