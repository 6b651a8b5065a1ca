#!/usr/bin/env bash
# The `make run` path, headless: starts the stack with scripts/run.sh on its own ports and databases,
# drives the mail links, the docs page, two browser apps on other origins (one listed in
# ACCOUNTS_CORS_ORIGINS, one not), a social sign-in through make run's dev OpenID provider and passkeys
# (a virtual authenticator) in headless Chromium (tests/e2e/browser.mjs), then stops it with Ctrl-C
# (SIGINT) and checks that everything it started is gone.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v chromium >/dev/null || scripts/install-packages.sh chromium
if [ ! -d var/tools/node_modules/playwright-core ] || [ ! -d var/tools/node_modules/maildev ]; then
  npm install --silent --no-fund --no-audit --prefix var/tools playwright-core@1 maildev@3 >/dev/null
fi

tag=smoke_$$
# The public URL is localhost, as make run's default is: WebAuthn refuses an IP address as the relying
# party, so with 127.0.0.1 passkeys would be off. accounts still listens on 127.0.0.1 only.
export ACCOUNTS_ADDR=127.0.0.1:18180 ACCOUNTS_PUBLIC_URL=http://localhost:18180 MAILER_ADDR=127.0.0.1:18181
export MAIL_WEB_PORT=18108 MAIL_SMTP_PORT=18125 DEV_OIDC_PORT=18192
# make run's dev OpenID provider, not providers from the caller's environment.
unset ACCOUNTS_SOCIAL_PROVIDERS ACCOUNTS_SOCIAL_REDIRECTS
# Browser apps served by browser.mjs itself: the first origin is listed, the second is not.
APP_ORIGIN=http://127.0.0.1:18190 STRANGER_ORIGIN=http://127.0.0.1:18191
export ACCOUNTS_CORS_ORIGINS=$APP_ORIGIN
export ACCOUNTS_JWKS_URL=$ACCOUNTS_PUBLIC_URL/.well-known/jwks.json
export ACCOUNTS_DATABASE_URL=postgres://postgres@127.0.0.1:5432/${tag}_accounts
export MAILER_DATABASE_URL=postgres://postgres@127.0.0.1:5432/${tag}_mailer
export AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$tag
export ACCOUNTS_BCRYPT_COST=4 LOG_FORMAT=json RUST_LOG=info
rabbitmqctl -q add_vhost "$tag" && rabbitmqctl -q set_permissions -p "$tag" guest '.*' '.*' '.*'

runner=
cleanup() {
  # An early failure leaves make run running: stop it before its databases go.
  if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
    kill -TERM -- -"$runner" 2>/dev/null || kill -TERM "$runner"
    wait "$runner" 2>/dev/null || true
  fi
  rabbitmqctl -q delete_vhost "$tag" || true
  for db in "${tag}_accounts" "${tag}_mailer"; do
    psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true
  done
}
trap cleanup EXIT

: > var/smoke.log # the last run's "Ctrl-C stops" must not pass for this one's
setsid scripts/run.sh > var/smoke.log 2>&1 &
runner=$!
for _ in $(seq 1 600); do
  grep -q "Ctrl-C stops" var/smoke.log && break
  kill -0 $runner 2>/dev/null || { cat var/smoke.log; echo "make run exited early" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "$ACCOUNTS_PUBLIC_URL/healthz" >/dev/null
curl -fsS "http://$MAILER_ADDR/healthz" >/dev/null

status=0
node tests/e2e/browser.mjs "$ACCOUNTS_PUBLIC_URL" "http://127.0.0.1:$MAIL_WEB_PORT" "$APP_ORIGIN" "$STRANGER_ORIGIN" \
  "http://127.0.0.1:$DEV_OIDC_PORT" || status=$?

kill -INT -- -$runner 2>/dev/null || kill -INT $runner
for _ in $(seq 1 60); do kill -0 $runner 2>/dev/null || break; sleep 0.5; done
for port in 18180 18181 18108 18125 18190 18191 18192; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "something still listens on :$port after Ctrl-C" >&2
    status=1
  fi
done
# Everything the stack logged while the browser signed up, reset, signed in socially and with passkeys:
# no access token (a JWT) and no one-time secret in a URL (code, state, token, link ticket, challenge).
if grep -Eo 'eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}|[?&](code|state|token|link|challenge)=[A-Za-z0-9_%-]{16,}' var/smoke.log; then
  echo "a secret reached the log (var/smoke.log)" >&2
  status=1
fi
[ $status -eq 0 ] && echo "smoke: make run started, served the browser flow and stopped cleanly"
exit $status
