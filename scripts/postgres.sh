#!/usr/bin/env bash
# Starts the machine's PostgreSQL 15 cluster (installing it if missing) and makes sure a
# `vephys` role and `vephys_test` database exist. Idempotent. Prints the URL to use.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: installing postgresql-15" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
pg_ctlcluster 15 main start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p 5432 && break
  sleep 1
done
run_psql() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtA -c \"$1\""; }
if [ "$(run_psql "select 1 from pg_roles where rolname='vephys'")" != "1" ]; then
  run_psql "create role vephys login superuser password 'vephys'"
fi
if [ "$(run_psql "select 1 from pg_database where datname='vephys_test'")" != "1" ]; then
  run_psql "create database vephys_test owner vephys"
fi
echo "postgres://vephys:vephys@127.0.0.1:5432/vephys_test"
