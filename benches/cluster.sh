#!/usr/bin/env bash
# The standard hookbench matrix (../shared/tools/compare.sh's cases) for each storage setup:
#
#   redb     one node, the embedded store (the default)
#   pg1      one node on PostgreSQL
#   pg2      two nodes on one PostgreSQL database, behind nginx (round-robin, keep-alive)
#
# with the CPU of every gateway process and of PostgreSQL (the postmaster and its backends)
# in the report. Everything runs on this machine, on loopback: the load generator, the
# verifying receiver, the database and the gateways share the cores, so read CPU per event
# next to events/s.
#
#   bash benches/cluster.sh                 # all three setups, RUNS=3 rounds each
#   SETUPS="pg1 pg2" RUNS=1 QUICK=1 bash benches/cluster.sh
#   PG_STATS=1 SETUPS=pg1 RUNS=1 bash benches/cluster.sh   # + the statements PostgreSQL spent its time on
#
# Needs: a release build (cargo build --release), PostgreSQL's binaries (Debian: apt-get
# install postgresql), nginx for pg2 (apt-get install nginx-light), and hookbench (built by
# compare.sh into /tmp/hookbench-target). The PostgreSQL cluster is a throwaway one in a temp
# directory, started as the `postgres` user when run as root, and removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SETUPS=${SETUPS:-"redb pg1 pg2"}
TOOLS=$(cd ../shared/tools && pwd)
HB=${HOOKBENCH:-/tmp/hookbench-target/release/hookbench}
[ -x "$HB" ] || cargo build --release --quiet --manifest-path "$TOOLS/hookbench/Cargo.toml" --target-dir /tmp/hookbench-target
HG=$PWD/target/release/hookgate
[ -x "$HG" ] || { echo "build first: cargo build --release" >&2; exit 2; }
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
RECEIVER=127.0.0.1:9999
SECRET=whsec_aG9va2JlbmNoLWZpeGVkLXNlY3JldC0zMi1ieXRlcyE=
TOKEN=bench-token
OUT=${OUT:-$(mktemp -d /tmp/hookgate-cluster-bench.XXXXXX)}
WORK=$(mktemp -d /tmp/hookgate-cluster-work.XXXXXX)
RESULTS=$OUT/results.jsonl
mkdir -p "$OUT"
# The database runs as another user when this runs as root: it must reach its directory.
chmod 755 "$WORK"
PIDS=()
PG_USER=$(id -un)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && PG_USER=postgres

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  [ -d "$WORK/pg/data" ] && as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$HB" receive --listen "$RECEIVER" --verify-secret "$SECRET" >"$OUT/receiver.log" 2>&1 &
PIDS+=($!)

# PostgreSQL with what matters for this load (see the README's "Running several nodes"):
# durable commits stay on (fsync, synchronous_commit); more shared buffers and WAL buffers than
# the defaults; enough connections for two pools.
mkdir -p "$WORK/pg" && chown "$PG_USER" "$WORK/pg"
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$PG_BIN/initdb" -D "$WORK/pg/data" -A trust -U hookgate >/dev/null
as_pg "$PG_BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w -o "-p $PG_PORT -k $WORK/pg \
  -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB -c wal_buffers=16MB \
  -c max_wal_size=4GB -c checkpoint_timeout=15min ${PG_STATS:+-c shared_preload_libraries=pg_stat_statements}" \
  start >/dev/null
PG_PID=$(head -1 "$WORK/pg/data/postmaster.pid")

node_config() {  # $1 file $2 port $3 backend $4 database
  bash "$TOOLS/compare.sh" --hookgate-config "$1" >/dev/null
  sed -i -e "s|^listen = .*|listen = \"127.0.0.1:$2\"|" -e "s|^data_dir = .*|data_dir = \"$WORK/data-$2\"|" "$1"
  # DELIVERY="max_in_flight_per_endpoint = 64" (say) adds keys to [delivery], for experiments.
  [ -n "${DELIVERY:-}" ] && sed -i -e "s|^allow_private_networks = true|allow_private_networks = true\n$DELIVERY|" "$1"
  if [ "$3" = postgres ]; then
    printf '\n[storage]\nbackend = "postgres"\npostgres_url = "postgres://hookgate@127.0.0.1:%s/%s"\n' "$PG_PORT" "$4" >>"$1"
  fi
}

start_node() {  # $1 port $2 backend $3 database; prints the pid
  local cfg=$WORK/node-$1.toml
  node_config "$cfg" "$1" "$2" "$3"
  HOOKGATE_TOKEN=$TOKEN RUST_LOG=warn "$HG" serve --config "$cfg" >"$OUT/node-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -fsS -m 1 -o /dev/null "http://127.0.0.1:$1/healthz" && break; sleep 0.1; done
  echo "$pid"
}

div=1; [ "${QUICK:-0}" = 1 ] && div=10
CASES=("1ep-c16 $((20000/div)) 16 1" "1ep-c64 $((20000/div)) 64 1" "5ep-c16 $((5000/div)) 16 5")

for setup in $SETUPS; do
  WATCH=()
  db=bench_$setup
  case $setup in
    redb)
      a=$(start_node 18080 redb -); PIDS+=("$a"); URL=http://127.0.0.1:18080
      WATCH=(--watch "hookgate=$a")
      ;;
    pg1)
      as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U hookgate -d postgres -c "CREATE DATABASE $db"
      [ -n "${PG_STATS:-}" ] && as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U hookgate -d "$db" -c "CREATE EXTENSION pg_stat_statements"
      a=$(start_node 18081 postgres "$db"); PIDS+=("$a"); URL=http://127.0.0.1:18081
      WATCH=(--watch "hookgate=$a" --watch "postgres=$PG_PID+")
      ;;
    pg2)
      as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U hookgate -d postgres -c "CREATE DATABASE $db"
      [ -n "${PG_STATS:-}" ] && as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U hookgate -d "$db" -c "CREATE EXTENSION pg_stat_statements"
      a=$(start_node 18082 postgres "$db"); PIDS+=("$a")
      b=$(start_node 18083 postgres "$db"); PIDS+=("$b")
      cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream hookgate { server 127.0.0.1:18082; server 127.0.0.1:18083; keepalive 128; }
  server {
    listen 127.0.0.1:18090;
    # The default (1000 requests) closes the load generator's keep-alive connections mid-run.
    keepalive_requests 1000000;
    location / { proxy_pass http://hookgate; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
      nginx -c "$WORK/nginx.conf"
      URL=http://127.0.0.1:18090
      WATCH=(--watch "hookgate-a=$a" --watch "hookgate-b=$b" --watch "postgres=$PG_PID+" --watch "nginx=$(cat "$WORK/nginx.pid")+")
      ;;
  esac
  echo "== $setup: warm-up"
  "$HB" load --target hookgate --url "$URL" --token "$TOKEN" --receiver "http://$RECEIVER" --events 1000 \
    --concurrency 16 --endpoints 1 --trigger bench.one --label warmup --json >>"$OUT/warmup.jsonl" 2>>"$OUT/load.log"
  for r in $(seq 1 "$RUNS"); do
    for cs in "${CASES[@]}"; do
      read -r label n c k <<<"$cs"
      trig=bench.one; [ "$k" -gt 1 ] && trig=bench.fan
      sleep 2
      "$HB" load --target hookgate --url "$URL" --token "$TOKEN" --receiver "http://$RECEIVER" --events "$n" \
        --concurrency "$c" --endpoints "$k" --trigger "$trig" --label "$setup $label" "${WATCH[@]}" --json \
        2>>"$OUT/load.log" | tee -a "$RESULTS" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); \
print("  %s: %s events/s, %s deliveries/s (%s/%s), cpu %s" % (d.get("label"), d["ingest"]["events_per_s"], \
d["delivery"]["deliveries_per_s"], d["delivery"]["delivered"], d["delivery"]["expected"], d.get("cpu")))'
    done
  done
  if [ -n "${PG_STATS:-}" ] && [ "$setup" != redb ]; then
    echo "-- $setup: statements by total time (pg_stat_statements)"
    as_pg "$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U hookgate -d "$db" -c "SELECT calls,
      round(total_exec_time) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows,
      left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$db')
      ORDER BY total_exec_time DESC LIMIT 12" | tee -a "$OUT/statements.txt"
  fi
  # Stop this setup's processes before the next one starts.
  [ -f "$WORK/nginx.pid" ] && { kill "$(cat "$WORK/nginx.pid")"; rm -f "$WORK/nginx.pid"; }
  for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=("${PIDS[0]}")
done

echo
"$HB" report "$RESULTS" | tee "$OUT/report.md"
echo "raw results: $RESULTS"
