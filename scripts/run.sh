#!/usr/bin/env bash
# `make run`: the whole stack on this machine, without Docker. Reuses PostgreSQL, RabbitMQ and a
# running mail catcher when they answer; starts what is missing; stops only what it started. Unless
# ACCOUNTS_SOCIAL_PROVIDERS is configured (environment or .env), social sign-in goes to a local dev
# OpenID provider (tests/oidc/provider.mjs on DEV_OIDC_PORT: any login name, any password).
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
MAIL_WEB_PORT=${MAIL_WEB_PORT:-1080}
MAIL_SMTP_PORT=${MAIL_SMTP_PORT:-1025}
DEV_OIDC_PORT=${DEV_OIDC_PORT:-8090}
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
dev_oidc_ready=
stop() {
  trap - INT TERM EXIT
  [ -z "$dev_oidc_ready" ] || rm -f "$dev_oidc_ready"
  if ((${#pids[@]})); then
    say "stopping ${#pids[@]} process(es) started by make run"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
# Ctrl-C (SIGINT to the whole process group) or SIGTERM: exit through stop, with the signal's status.
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

# Social sign-in: the providers configured in the environment or .env, else a local dev OpenID provider,
# a child like the mail catcher: in make run's process group (Ctrl-C reaches it) and in pids (stop sends
# it SIGTERM). It prints its ready line on stdout (to a file here) and its logs on stderr.
dev_oidc=
if [ -n "${ACCOUNTS_SOCIAL_PROVIDERS+set}" ] ||
  grep -Eqs '^[[:space:]]*(export[[:space:]]+)?ACCOUNTS_SOCIAL_PROVIDERS=' .env; then
  say "social sign-in as configured by ACCOUNTS_SOCIAL_PROVIDERS; no dev OpenID provider"
else
  if reachable 127.0.0.1 "$DEV_OIDC_PORT"; then
    say "something already listens on :$DEV_OIDC_PORT: set DEV_OIDC_PORT to a free port for the dev OpenID provider"
    exit 1
  fi
  if [ ! tests/oidc/node_modules/.package-lock.json -nt tests/oidc/package-lock.json ]; then
    command -v npm >/dev/null || { say "npm is missing: install Node.js (Debian: nodejs npm) for the dev OpenID provider"; exit 1; }
    say "installing the dev OpenID provider into tests/oidc (npm ci, npm registry)"
    npm ci --silent --no-audit --no-fund --prefix tests/oidc >/dev/null
  fi
  client_id=accounts-make-run
  client_secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  oidc_config=$(printf '{"clients":[{"client_id":"%s","client_secret":"%s","redirect_uris":["%s"]}]}' \
    "$client_id" "$client_secret" "${ACCOUNTS_PUBLIC_URL%/}/api/auth/dev/callback")
  dev_oidc_ready=$(mktemp "${TMPDIR:-/tmp}/dev-oidc.XXXXXX")
  prefixed dev-oidc 32 env PORT="$DEV_OIDC_PORT" OIDC_CONFIG="$oidc_config" \
    sh -c 'exec node tests/oidc/provider.mjs >"$1"' sh "$dev_oidc_ready"
  dev_oidc_pid=${pids[-1]}
  for _ in $(seq 1 120); do
    dev_oidc=$(sed -n 's/.*"issuer":"\([^"]*\)".*/\1/p' "$dev_oidc_ready")
    [ -z "$dev_oidc" ] || break
    kill -0 "$dev_oidc_pid" 2>/dev/null || { say "the dev OpenID provider exited before listening"; exit 1; }
    sleep 0.5
  done
  [ -n "$dev_oidc" ] || { say "the dev OpenID provider did not listen on :$DEV_OIDC_PORT within a minute"; exit 1; }
  rm -f "$dev_oidc_ready"
  export ACCOUNTS_SOCIAL_PROVIDERS=dev ACCOUNTS_SOCIAL_DEV_ISSUER=$dev_oidc ACCOUNTS_SOCIAL_DEV_TRUST_EMAIL=true
  export ACCOUNTS_SOCIAL_DEV_CLIENT_ID=$client_id ACCOUNTS_SOCIAL_DEV_CLIENT_SECRET=$client_secret
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

signed_in=${ACCOUNTS_PUBLIC_URL%/}/account/signed-in
if [ -n "$dev_oidc" ]; then
  social="Sign in with the dev provider: $signed_in?provider=dev (any name, any password)"
else
  social="social sign-in  $signed_in   (the providers of ACCOUNTS_SOCIAL_PROVIDERS)"
fi
cat <<MSG

  accounts API    $ACCOUNTS_PUBLIC_URL/api/users        (JWKS: $ACCOUNTS_PUBLIC_URL/.well-known/jwks.json)
  API docs        $ACCOUNTS_PUBLIC_URL/docs
  mail catcher    http://127.0.0.1:$MAIL_WEB_PORT
  metrics         $ACCOUNTS_PUBLIC_URL/metrics   http://$MAILER_ADDR/metrics
  mailer admin    http://$MAILER_ADDR/admin/failed-sends   (a token with mail.read)
  $social

  The first administrator (in another terminal; the password is prompted, never an argument):
    $bin/accounts create-superuser --email you@example.com
  then sign in with POST /api/users/login and use /api/admin/... with the token.

  Ctrl-C stops what make run started.

MSG
wait -n "${pids[@]}" || true
say "a process exited; stopping the rest"
