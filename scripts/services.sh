#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on the URLs the services use, starting or installing
# them (Debian packages) when they don't, and says exactly what is missing otherwise.
#
#   scripts/services.sh            ensure both are up
#   scripts/services.sh check      only report, exit non-zero when something is missing
set -euo pipefail

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
AMQP_HOST=${AMQP_HOST:-127.0.0.1}
AMQP_PORT=${AMQP_PORT:-5672}

say() { printf '\033[1m[services]\033[0m %s\n' "$*" >&2; }

reachable() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for() { # name host port seconds
  local deadline=$((SECONDS + $4))
  while ! reachable "$2" "$3"; do
    if ((SECONDS >= deadline)); then
      say "$1 did not come up on $2:$3 within $4 s"
      return 1
    fi
    sleep 1
  done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    say "need root to run: $*  (run it yourself, or install sudo)"
    return 1
  fi
}

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    say "cannot install $* here: no apt-get. Install it with your package manager and start it."
    return 1
  fi
  say "installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
    { as_root apt-get update -q && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
}

ensure_postgres() {
  if reachable "$PG_HOST" "$PG_PORT"; then return 0; fi
  [ "${1:-}" = check ] && { say "PostgreSQL is not reachable on $PG_HOST:$PG_PORT (Debian package: postgresql)"; return 1; }
  local fresh=no
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql || return 1
    fresh=yes
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    say "PostgreSQL is installed but has no cluster; create one with: pg_createcluster <version> main"
    return 1
  fi
  if [ "$fresh" = yes ]; then
    # A fresh development install: let local TCP clients in without a password, as the default
    # URLs (postgres://postgres@localhost) expect. An existing installation is left as it is.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  wait_for PostgreSQL "$PG_HOST" "$PG_PORT" 30
}

ensure_rabbitmq() {
  if reachable "$AMQP_HOST" "$AMQP_PORT"; then return 0; fi
  [ "${1:-}" = check ] && { say "RabbitMQ is not reachable on $AMQP_HOST:$AMQP_PORT (Debian package: rabbitmq-server)"; return 1; }
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    apt_install rabbitmq-server || return 1
  fi
  if ! reachable "$AMQP_HOST" "$AMQP_PORT"; then
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached
  fi
  wait_for RabbitMQ "$AMQP_HOST" "$AMQP_PORT" 90
}

status=0
ensure_postgres "${1:-}" || status=1
ensure_rabbitmq "${1:-}" || status=1
if ! command -v rabbitmqctl >/dev/null 2>&1; then
  say "rabbitmqctl is not on the PATH; the tests create a vhost each with it (Debian package: rabbitmq-server)"
  status=1
fi
exit $status
