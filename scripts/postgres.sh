#!/usr/bin/env bash
# Starts the machine's PostgreSQL 15 cluster (installing it if missing) and makes sure a
# `vephys` role and `vephys_test` database exist. Idempotent.
#
#   scripts/postgres.sh        prints the URL of the plain cluster (port 5432)
#   scripts/postgres.sh tls    also runs a second cluster, `15 tls` on port 5433, that accepts
#                              TLS connections only, with a server certificate for `localhost`
#                              (not 127.0.0.1) from a private test CA; prints shell exports:
#                                VEPHYS_TEST_TLS_DATABASE_URL  postgres://…@localhost:5433/vephys_test (no sslmode)
#                                VEPHYS_TEST_DATABASE_CA       the CA that signed the certificate
#                                VEPHYS_TEST_OTHER_CA          an unrelated CA (must be refused)
#                              use: eval "$(scripts/postgres.sh tls)"
set -euo pipefail
mode="${1:-plain}"
case "$mode" in plain|tls) ;; *) echo "usage: $0 [tls]" >&2; exit 2 ;; esac
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: installing postgresql-15" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi

# ensure_db CLUSTER PORT: the cluster answers, with the vephys role and vephys_test database.
ensure_db() {
  local cluster="$1" port="$2"
  pg_ctlcluster 15 "$cluster" start >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 1
  done
  run_psql() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
  if [ "$(run_psql "select 1 from pg_roles where rolname='vephys'")" != "1" ]; then
    run_psql "create role vephys login superuser password 'vephys'"
  fi
  if [ "$(run_psql "select 1 from pg_database where datname='vephys_test'")" != "1" ]; then
    run_psql "create database vephys_test owner vephys"
  fi
}

if [ "$mode" = plain ]; then
  ensure_db main 5432
  echo "postgres://vephys:vephys@127.0.0.1:5432/vephys_test"
  exit 0
fi

# --- tls: a private CA, a server certificate, a TLS-only cluster --------------------------------
if ! command -v openssl >/dev/null 2>&1; then
  echo "postgres: installing openssl" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
VEPHYS_CACHE="${VEPHYS_CACHE:-${HOME:-/root}/.cache/vephys}"
certs="$VEPHYS_CACHE/postgres-tls"
conf=/etc/postgresql/15/tls
if [ ! -s "$certs/server.crt" ] || ! openssl x509 -checkend 86400 -noout -in "$certs/server.crt" >/dev/null 2>&1; then
  echo "postgres: making a test CA and a server certificate for localhost in $certs" >&2
  rm -rf "$certs"; mkdir -p "$certs"
  (
    cd "$certs"
    for ca in ca other-ca; do
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$ca.key" -out "$ca.crt" \
        -subj "/CN=vephys test $ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    done
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext ca.srl other-ca.key
  )
  fresh_certs=1
fi
if [ ! -d "$conf" ]; then
  echo "postgres: creating the TLS-only cluster 15/tls on port 5433" >&2
  pg_createcluster -p 5433 15 tls >/dev/null
fi
# The server reads its key as the postgres user and refuses a key others can read.
install -o postgres -g postgres -m 0644 "$certs/server.crt" "$conf/server.crt"
install -o postgres -g postgres -m 0600 "$certs/server.key" "$conf/server.key"
cat > "$conf/conf.d/vephys-tls.conf" <<EOF
listen_addresses = '127.0.0.1,::1'
ssl = on
ssl_cert_file = '$conf/server.crt'
ssl_key_file = '$conf/server.key'
EOF
# TCP only over TLS (password auth); the local socket keeps peer auth for `su postgres`.
cat > "$conf/pg_hba.conf" <<'EOF'
local     all  all                 peer
hostssl   all  all  127.0.0.1/32   scram-sha-256
hostssl   all  all  ::1/128        scram-sha-256
hostnossl all  all  0.0.0.0/0      reject
hostnossl all  all  ::/0           reject
EOF
chown postgres:postgres "$conf/pg_hba.conf" "$conf/conf.d/vephys-tls.conf"
if [ "${fresh_certs:-0}" = 1 ]; then pg_ctlcluster 15 tls restart >/dev/null 2>&1 || true; fi
pg_ctlcluster 15 tls reload >/dev/null 2>&1 || true
ensure_db tls 5433
echo "export VEPHYS_TEST_TLS_DATABASE_URL=postgres://vephys:vephys@localhost:5433/vephys_test"
echo "export VEPHYS_TEST_DATABASE_CA=$certs/ca.crt"
echo "export VEPHYS_TEST_OTHER_CA=$certs/other-ca.crt"
