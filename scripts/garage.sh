#!/usr/bin/env bash
# A real S3-compatible server (Garage, one node on loopback) for the tests.
#
#   eval "$(scripts/garage.sh start)"   # fresh empty node, bucket and key; prints `export` lines
#   scripts/garage.sh env               # re-prints the export lines of the running node
#   scripts/garage.sh stop              # stops the node this script started
#   scripts/garage.sh install           # only builds the binary (once, cached), e.g. in the
#                                       # background while the project builds
#
# VEPHYS_TEST_S3_PID is the server's pid, for the chaos test (cli/tests/chaos.rs) to pause it.
# Only the `export` lines go to stdout (so `eval` is safe); progress goes to stderr, and the
# server's and the admin commands' output (which holds the secret key) to
# $VEPHYS_CACHE/garage/garage.log. Every `start` wipes the previous data, so tests always see an
# empty bucket. Ports: VEPHYS_GARAGE_PORT_BASE (default 39100) for S3,
# +1 for RPC, +2 for the admin API; uncommon so they do not collide with a developer's own Garage.
set -euo pipefail
VEPHYS_CACHE="${VEPHYS_CACHE:-${HOME:-/root}/.cache/vephys}"

GARAGE_VERSION=2.5.0
home="$VEPHYS_CACHE/garage"
bin="$home/bin/garage"
run="$home/run"            # data, metadata, config and the env file of the current node
pidfile="$home/garage.pid"
log="$home/garage.log"
conf="$run/garage.toml"
envfile="$run/env"
base="${VEPHYS_GARAGE_PORT_BASE:-39100}"
s3_port=$base
rpc_port=$((base + 1))
admin_port=$((base + 2))
bucket=vephys-test
key_name=vephys-test-key

say() { echo "garage: $*" >&2; }
die() { echo "garage: error: $*" >&2; exit 1; }
g() { "$bin" -c "$conf" "$@"; }

ensure_binary() {
  [ -x "$bin" ] && return 0
  # one build at a time: .ci/run starts one in the background, and `start` waits for it here
  mkdir -p "$home"
  exec 9>"$home/.build.lock"
  if ! flock -n 9; then
    say "waiting for the garage build already running"
    flock 9
  fi
  if [ ! -x "$bin" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install a Rust toolchain to build garage $GARAGE_VERSION"
    say "building garage $GARAGE_VERSION into $home (once; takes about 17 minutes on 2 cores)"
    cargo install garage --version "$GARAGE_VERSION" --locked --root "$home" \
      --target-dir "$VEPHYS_CACHE/garage-target" >&2 || die "cargo install garage $GARAGE_VERSION failed"
    [ -x "$bin" ] || die "cargo install finished but $bin is missing"
  fi
  exec 9>&- # the server started next must not hold the lock
}

# The pid in the pid file, if that process is alive and really is a garage we started.
our_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$bin" || return 1
  echo "$pid"
}

stop() {
  local pid
  if pid="$(our_pid)"; then
    say "stopping pid $pid"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "pid $pid did not stop in 5 s; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}

# A port is taken when something listens on it (ss), or, without iproute2, accepts a connection.
port_taken() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# 32 random bytes as hex, without needing openssl on a bare machine.
random_hex() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

start() {
  ensure_binary
  stop
  for p in "$s3_port" "$rpc_port" "$admin_port"; do
    if port_taken "$p"; then
      die "port $p on this machine is already in use (by another program, not by a garage this script started); free it or set VEPHYS_GARAGE_PORT_BASE to another base (ports base..base+2)"
    fi
  done

  rm -rf "$run"
  mkdir -p "$run/meta" "$run/data"
  chmod 700 "$run"
  local rpc_secret admin_token
  rpc_secret="$(random_hex)"
  admin_token="$(random_hex)"
  (
    umask 077
    cat >"$conf" <<EOF
# written by scripts/garage.sh start; recreated on every start
metadata_dir = "$run/meta"
data_dir = "$run/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
admin_token = "$admin_token"
EOF
  )

  say "starting on 127.0.0.1:$s3_port (S3), :$rpc_port (RPC), :$admin_port (admin); log $log"
  # the log is appended to by the server and the admin commands below, so open it O_APPEND
  : >"$log"
  chmod 600 "$log"
  # setsid: the server outlives this script and the caller's shell job control
  RUST_LOG="${GARAGE_LOG:-garage=info}" setsid "$bin" -c "$conf" server >>"$log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pidfile"

  local ok=""
  for _ in $(seq 1 100); do
    # kill -0, not our_pid: right after the fork the child may not have exec'd garage yet
    kill -0 "$pid" 2>/dev/null || die "the server exited at start; see $log:
$(tail -n 20 "$log")"
    if g status >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ -n "$ok" ] || { stop; die "the server did not answer within 20 s; see $log"; }

  local node
  node="$(g node id -q 2>/dev/null | cut -d@ -f1)"
  [ -n "$node" ] || die "could not read the node id"
  g layout assign -z dc1 -c 1G "$node" >>"$log" 2>&1 || die "layout assign failed; see $log"
  g layout apply --version 1 >>"$log" 2>&1 || die "layout apply failed; see $log"
  # the layout takes a moment to reach the tables; bucket creation fails until it has
  for _ in $(seq 1 50); do
    if g bucket create "$bucket" >>"$log" 2>&1; then ok=2; break; fi
    sleep 0.2
  done
  [ "$ok" = 2 ] || die "could not create bucket $bucket; see $log"
  g key create "$key_name" >>"$log" 2>&1 || die "key create failed; see $log"
  g bucket allow --read --write --owner "$bucket" --key "$key_name" >>"$log" 2>&1 \
    || die "bucket allow failed; see $log"

  local key_id secret
  key_id="$(g key info --key-id "$key_name" 2>/dev/null | tr -d '[:space:]')"
  secret="$(g key info --secret-key "$key_name" 2>/dev/null | tr -d '[:space:]')"
  [[ "$key_id" =~ ^GK[0-9a-f]+$ ]] || die "unexpected key id '$key_id'"
  [[ "$secret" =~ ^[0-9a-f]+$ ]] || die "could not read the secret key of $key_name"

  # wait until the S3 endpoint itself accepts connections
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null && break
    sleep 0.2
  done

  (
    umask 077
    cat >"$envfile" <<EOF
export VEPHYS_TEST_S3_ENDPOINT='http://127.0.0.1:$s3_port'
export VEPHYS_TEST_S3_BUCKET='$bucket'
export AWS_ACCESS_KEY_ID='$key_id'
export AWS_SECRET_ACCESS_KEY='$secret'
export AWS_REGION='garage'
export AWS_ALLOW_HTTP='true'
export VEPHYS_TEST_S3_PID='$(cat "$pidfile")'
EOF
  )
  say "ready: bucket $bucket, key $key_id"
  cat "$envfile"
}

print_env() {
  our_pid >/dev/null || die "no garage started by this script is running; run: scripts/garage.sh start"
  [ -f "$envfile" ] || die "$envfile is missing; run: scripts/garage.sh start"
  cat "$envfile"
}

case "${1:-}" in
  start) start ;;
  install) ensure_binary ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env|install" >&2; exit 2 ;;
esac
