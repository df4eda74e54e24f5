#!/usr/bin/env bash
# Make sure the system packages and services the test suite talks to are present and
# running. Installs with apt-get when run as root on Debian; otherwise stops with a
# message naming exactly what is missing.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have psql || need_pkgs+=(postgresql-client)
have pgbench || need_pkgs+=(postgresql-contrib)
have pg_ctlcluster || need_pkgs+=(postgresql)
have redis-server || need_pkgs+=(redis-server)
have chromium || need_pkgs+=(chromium)
have npm || need_pkgs+=(npm)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
have ssh || need_pkgs+=(openssh-client)
[ -x /usr/sbin/pgbouncer ] || need_pkgs+=(pgbouncer)
have cc || need_pkgs+=(gcc)  # the compiled gateway loops (scripts/build_native.py)
# The JDBC client tests (gateway/tests/postgres/test_clients.py): a JDK runs the client from
# its source, with Debian's pgjdbc.
have javac || need_pkgs+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need_pkgs+=(libpostgresql-jdbc-java)

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing system packages: ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" >/dev/null; }
  else
    echo "missing system packages: ${need_pkgs[*]} (install them, e.g. 'sudo apt-get install ${need_pkgs[*]}')" >&2
    exit 1
  fi
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
if ! pg_up; then
  if [ "$(id -u)" = 0 ] && have pg_ctlcluster; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 0.5; done
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432 (start it: pg_ctlcluster <version> main start)" >&2; exit 1; }
fi

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
if ! redis_up; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 1 20); do redis_up && break; sleep 0.25; done
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379 (start redis-server)" >&2; exit 1; }
fi
