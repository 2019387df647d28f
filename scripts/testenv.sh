#!/usr/bin/env bash
# dlb test environment: one PostgreSQL primary, two streaming hot-standby
# replicas, one Redis (and a TLS-only one) and a Redis Cluster of three masters, all on 127.0.0.1
# with their own ports, all state
# under one base directory.
#
# Usage: testenv.sh COMMAND [ARGS]
#   up                  create/start everything (idempotent; repairs a partial env)
#   down                stop everything and remove the base dir (idempotent)
#   env                 print `export` lines for the test suite (eval-safe)
#   status              show what runs; exit 0 iff everything is up
#   stop-replica N      stop replica N (1|2) with -m immediate (idempotent)
#   start-replica N     start replica N and wait until it is in recovery and streaming
#   pause-replica N     SELECT pg_wal_replay_pause() on replica N
#   resume-replica N    SELECT pg_wal_replay_resume() on replica N
#   stop-redis          stop the standalone Redis (idempotent)
#   start-redis         start it again and wait until it answers PING
#   psql NODE [ARGS]    psql to NODE (primary|1|2) as postgres on dlb_test
#
# Environment:
#   DLB_TESTENV_DIR            base dir                (default /tmp/dlb-testenv)
#   DLB_TESTENV_PG_PORT        primary port            (default 55432)
#   DLB_TESTENV_REPLICA1_PORT  replica 1 port          (default primary+1)
#   DLB_TESTENV_REPLICA2_PORT  replica 2 port          (default primary+2)
#   DLB_TESTENV_REDIS_PORT     Redis port              (default 56379)
#   DLB_TESTENV_REDIS_TLS_PORT TLS-only Redis port     (default Redis+4)
#   DLB_TESTENV_REDIS_CLUSTER_PORT  first of the 3 Redis Cluster masters' ports (default Redis+1;
#                              their cluster bus ports are these + 100)
#   DLB_TESTENV_TIMEOUT        seconds for every wait  (default 60)
#   DLB_PG_BIN                 PostgreSQL bin dir      (default: highest /usr/lib/postgresql/*/bin)
#
# When run as root, PostgreSQL and Redis run as the `postgres` user (via
# runuser) and the base dir is owned by it.  Otherwise they run as the
# invoking user, who must own the base dir.
set -euo pipefail

# Connection-related PG* variables of the caller must not redirect our
# clients/servers somewhere else.
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGPASSFILE \
    PGOPTIONS PGSERVICE PGSERVICEFILE PGSSLMODE PGTARGETSESSIONATTRS PGDATA \
    PGCONNECT_TIMEOUT PGAPPNAME PGREQUIRESSL PGGSSENCMODE

SCRIPT_PATH="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/$(basename -- "${BASH_SOURCE[0]}")"

BASE="${DLB_TESTENV_DIR:-/tmp/dlb-testenv}"
BASE="${BASE%/}"
PG_PORT="${DLB_TESTENV_PG_PORT:-55432}"
R1_PORT="${DLB_TESTENV_REPLICA1_PORT:-$((PG_PORT + 1))}"
R2_PORT="${DLB_TESTENV_REPLICA2_PORT:-$((PG_PORT + 2))}"
REDIS_PORT="${DLB_TESTENV_REDIS_PORT:-56379}"
CLUSTER_PORT="${DLB_TESTENV_REDIS_CLUSTER_PORT:-$((REDIS_PORT + 1))}"
TLS_PORT="${DLB_TESTENV_REDIS_TLS_PORT:-$((REDIS_PORT + 4))}"
TIMEOUT="${DLB_TESTENV_TIMEOUT:-60}"
HOST=127.0.0.1
DB=dlb_test
PG_SUPERUSER=postgres
# OS user that owns the env and runs the servers when invoked as root: the
# owner of an existing base dir, else postgres.
RUN_AS=postgres
if ((EUID == 0)) && [[ -d $BASE ]]; then
    _owner=$(stat -c %U -- "$BASE")
    if [[ $_owner != root && $_owner != UNKNOWN ]]; then
        RUN_AS=$_owner
    fi
    unset _owner
fi
MARKER="$BASE/.dlb-testenv"
LOCK_FILE="$BASE.lock"
NODES=(primary replica1 replica2)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

log() { printf 'testenv: %s\n' "$*"; }
warn() { printf 'testenv: warning: %s\n' "$*" >&2; }
die() {
    printf 'testenv: error: %s\n' "$*" >&2
    exit 1
}

# die_log LOGFILE MESSAGE: fail and show the tail of LOGFILE.
die_log() {
    local logfile=$1
    shift
    printf 'testenv: error: %s\n' "$*" >&2
    if [[ -n $logfile ]]; then
        printf 'testenv: see log file %s; last lines:\n' "$logfile" >&2
        if [[ -r $logfile ]]; then
            tail -n 20 -- "$logfile" | sed 's/^/    | /' >&2
        else
            echo "    (log file missing or unreadable)" >&2
        fi
    fi
    exit 1
}

default_pg_bin() {
    local d
    local -a found=()
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x $d/pg_ctl ]] && found+=("$d")
    done
    ((${#found[@]} > 0)) || return 0
    printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

PG_BIN="${DLB_PG_BIN:-$(default_pg_bin)}"
PG_BIN="${PG_BIN%/}"

check_pg_bin() {
    [[ -n $PG_BIN ]] || die "no PostgreSQL server binaries found in /usr/lib/postgresql/*/bin; run scripts/bootstrap.sh or set DLB_PG_BIN"
    local b
    for b in initdb pg_ctl pg_basebackup psql; do
        [[ -x $PG_BIN/$b ]] || die "$PG_BIN/$b not found or not executable (DLB_PG_BIN=$PG_BIN); run scripts/bootstrap.sh"
    done
}

check_redis_bin() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run scripts/bootstrap.sh"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found; run scripts/bootstrap.sh"
}

check_user() {
    if ((EUID != 0)) && [[ -e $BASE && ! -O $BASE ]]; then
        die "$BASE is owned by $(stat -c %U -- "$BASE"), not $(id -un); run as that user (or root), or set DLB_TESTENV_DIR"
    fi
    if ((EUID == 0)); then
        id -u "$RUN_AS" >/dev/null 2>&1 || die "running as root but user '$RUN_AS' does not exist (PostgreSQL refuses to run as root)"
        command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux)"
    fi
}

# as_owner CMD...: run CMD as the owner of the environment.  From root that is
# the postgres user (PostgreSQL refuses to run as root); otherwise the caller.
# fd 9 (the lock, see take_lock) is closed for children: a daemon inheriting
# it would hold the lock forever.
as_owner() {
    if ((EUID == 0)); then
        (cd / && runuser -u "$RUN_AS" -- "$@" 9<&-)
    else
        "$@" 9<&-
    fi
}

# owner_write FILE: write stdin to FILE as the owner.
owner_write() {
    as_owner tee -- "$1" >/dev/null
}

# owner_logfile FILE: create/truncate FILE as the owner; prints its name.
owner_logfile() {
    as_owner rm -f -- "$1" || return 1
    owner_write "$1" </dev/null || return 1
    echo "$1"
}

CHANGED=0 # set when `up` had to start or create something


node_port() {
    case $1 in
    primary) echo "$PG_PORT" ;;
    replica1) echo "$R1_PORT" ;;
    replica2) echo "$R2_PORT" ;;
    *) die "unknown node '$1'" ;;
    esac
}
node_dir() { echo "$BASE/$1"; }
node_data() { echo "$BASE/$1/data"; }
node_sock() { echo "$BASE/$1/sock"; }
node_log() { echo "$BASE/$1.log"; }

# replica_node N: map a user-supplied replica number to a node name.
replica_node() {
    case ${1-} in
    1 | r1 | replica1) echo replica1 ;;
    2 | r2 | replica2) echo replica2 ;;
    *) die "replica must be 1 or 2 (got '${1-}')" ;;
    esac
}

# any_node ARG: primary|1|2 (and aliases) to a node name.
any_node() {
    case ${1-} in
    primary | p | 0) echo primary ;;
    *) replica_node "${1-}" ;;
    esac
}

# pg_query PORT DB SQL: run SQL, print the unaligned tuples-only result.
# Fails quietly when the server does not answer.
pg_query() {
    PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$HOST" -p "$1" -U "$PG_SUPERUSER" -d "$2" -c "$3" 2>/dev/null
}

# pid_alive PID: PID exists and is not a zombie (a killed daemon may linger
# as a zombie until init reaps it; kill -0 and pg_ctl status count it alive).
pid_alive() {
    local st
    [[ ${1-} =~ ^[0-9]+$ ]] || return 1
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    st=${st%% *}
    [[ $st != Z && $st != X ]]
}

# node_running NODE: its postmaster is alive (pg_ctl status, minus zombies).
node_running() {
    local data
    data=$(node_data "$1")
    [[ -f $data/PG_VERSION ]] || return 1
    as_owner "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1 || return 1
    pid_alive "$(head -n 1 -- "$data/postmaster.pid" 2>/dev/null)"
}

node_pid() {
    local data
    data=$(node_data "$1")
    if [[ -r $data/postmaster.pid ]]; then
        head -n 1 -- "$data/postmaster.pid"
    else
        echo "?"
    fi
}

node_answers() { [[ $(pg_query "$(node_port "$1")" postgres 'SELECT 1') == 1 ]]; }
node_in_recovery() { [[ $(pg_query "$(node_port "$1")" postgres 'SELECT pg_is_in_recovery()') == t ]]; }
node_is_primary() { [[ $(pg_query "$(node_port "$1")" postgres 'SELECT pg_is_in_recovery()') == f ]]; }

# replica_streaming NODE: the primary sees NODE's walreceiver streaming.
replica_streaming() {
    [[ $(pg_query "$PG_PORT" postgres \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'dlb-$1' AND state = 'streaming'") == 1 ]]
}

streaming_count() {
    pg_query "$PG_PORT" postgres \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name IN ('dlb-replica1', 'dlb-replica2') AND state = 'streaming'" ||
        echo 0
}

both_streaming() { [[ $(streaming_count) == 2 ]]; }

db_visible() { # NODE
    [[ $(pg_query "$(node_port "$1")" postgres "SELECT count(*) FROM pg_database WHERE datname = '$DB'") == 1 ]]
}

# port_in_use PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# wait_until SECONDS WHAT LOGFILE CMD...: bounded polling until CMD succeeds.
wait_until() {
    local timeout=$1 what=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die_log "$logfile" "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.2
    done
}

# Serialize mutating commands (tests may call this script concurrently).
# The lock lives next to (not inside) the base dir because `down` removes it.
take_lock() {
    command -v flock >/dev/null 2>&1 || return 0
    if [[ ! -e $LOCK_FILE ]]; then
        (umask 000 && : >>"$LOCK_FILE") 2>/dev/null || true
    fi
    if [[ -r $LOCK_FILE ]]; then
        exec 9<"$LOCK_FILE"
        flock -w "$TIMEOUT" 9 || die "could not get the lock $LOCK_FILE within ${TIMEOUT}s (another testenv.sh still running?)"
    else
        warn "cannot create/read lock file $LOCK_FILE; continuing without locking"
    fi
}

check_socket_path() {
    local n p
    for n in "${NODES[@]}"; do
        p="$(node_sock "$n")/.s.PGSQL.$(node_port "$n")"
        ((${#p} < 100)) || die "unix socket path too long (${#p} chars): $p; use a shorter DLB_TESTENV_DIR"
    done
}

check_settings() {
    local v
    for v in "$PG_PORT" "$R1_PORT" "$R2_PORT" "$REDIS_PORT" "$CLUSTER_PORT" "$TLS_PORT" "$TIMEOUT"; do
        [[ $v =~ ^[0-9]+$ ]] || die "ports and DLB_TESTENV_TIMEOUT must be numbers (got '$v')"
    done
    [[ $BASE == /* ]] || die "DLB_TESTENV_DIR must be an absolute path (got '$BASE')"
    [[ $BASE != / ]] || die "DLB_TESTENV_DIR must not be /"
}

# ---------------------------------------------------------------------------
# base dir
# ---------------------------------------------------------------------------

# ensure_base: create the base dir (owned by the env owner) with its marker.
ensure_base() {
    if [[ -d $BASE && ! -e $MARKER ]]; then
        if [[ -n $(ls -A -- "$BASE") ]]; then
            die "$BASE exists, is not empty and was not created by testenv.sh (no $MARKER); refusing to use it"
        fi
    fi
    mkdir -p -- "$BASE"
    if ((EUID == 0)); then
        chown "$RUN_AS:" -- "$BASE"
    elif [[ ! -O $BASE ]]; then
        die "$BASE is not owned by $(id -un); remove it or set DLB_TESTENV_DIR"
    fi
    chmod 0755 -- "$BASE"
    [[ -e $MARKER ]] || echo "dlb test environment; managed by $SCRIPT_PATH" | owner_write "$MARKER"
}

remove_base() {
    [[ -e $BASE ]] || return 0
    if [[ ! -e $MARKER ]]; then
        if [[ -d $BASE && -z $(ls -A -- "$BASE") ]]; then
            rmdir -- "$BASE"
            return 0
        fi
        die "refusing to remove $BASE: it has no $MARKER (not created by testenv.sh)"
    fi
    rm -rf -- "$BASE"
}

# ---------------------------------------------------------------------------
# PostgreSQL nodes
# ---------------------------------------------------------------------------

# write_node_conf NODE: settings for NODE, included from postgresql.conf.
# The primary's postgresql.conf (with the include line) is copied to the
# replicas by pg_basebackup; each replica then gets its own include file.
write_node_conf() {
    local node=$1
    owner_write "$(node_data "$node")/dlb_testenv.conf" <<EOF
# Written by testenv.sh; node-specific settings for the dlb test environment.
listen_addresses = '$HOST'
port = $(node_port "$node")
unix_socket_directories = '$(node_sock "$node")'
cluster_name = 'dlb-$node'
max_connections = 200
shared_buffers = 32MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 256MB
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
fsync = off
full_page_writes = off
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

pg_start() { # NODE
    local node=$1 logfile
    logfile=$(node_log "$node")
    log "starting $node (port $(node_port "$node"))"
    CHANGED=1
    if port_in_use "$(node_port "$node")"; then
        die "port $(node_port "$node") on $HOST is already in use by another process; stop it or choose another port (see the DLB_TESTENV_*_PORT variables)"
    fi
    as_owner mkdir -p -- "$(node_sock "$node")"
    if ! as_owner "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$(node_data "$node")" -l "$logfile" >/dev/null; then
        die_log "$logfile" "pg_ctl start failed for $node"
    fi
}

# pg_stop NODE MODE: stop NODE if running (falls back to immediate).
pg_stop() {
    local node=$1 mode=$2
    node_running "$node" || return 0
    log "stopping $node (-m $mode)"
    if ! as_owner "$PG_BIN/pg_ctl" stop -w -t "$TIMEOUT" -m "$mode" -D "$(node_data "$node")" >/dev/null; then
        if [[ $mode != immediate ]]; then
            warn "pg_ctl stop -m $mode failed for $node; retrying with -m immediate"
            as_owner "$PG_BIN/pg_ctl" stop -w -t "$TIMEOUT" -m immediate -D "$(node_data "$node")" >/dev/null ||
                die_log "$(node_log "$node")" "could not stop $node"
        else
            die_log "$(node_log "$node")" "could not stop $node"
        fi
    fi
}

create_primary() {
    local data initdb_log
    data=$(node_data primary)
    log "initdb primary in $data"
    CHANGED=1
    as_owner mkdir -p -- "$(node_dir primary)" "$(node_sock primary)"
    initdb_log=$(owner_logfile "$BASE/initdb.log")
    if ! as_owner "$PG_BIN/initdb" -D "$data" -U "$PG_SUPERUSER" --auth=trust \
        -E UTF8 --locale=C --no-sync --no-instructions >>"$initdb_log" 2>&1; then
        die_log "$initdb_log" "initdb failed"
    fi
    owner_write "$data/pg_hba.conf" <<'EOF'
# Written by testenv.sh: trust everything local (loopback-only test cluster).
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
EOF
    printf "\n# dlb test environment settings\ninclude 'dlb_testenv.conf'\n" |
        as_owner tee -a -- "$data/postgresql.conf" >/dev/null
    write_node_conf primary
}

create_replica() { # NODE
    local node=$1 data bb_log
    data=$(node_data "$node")
    log "pg_basebackup $node from primary"
    CHANGED=1
    as_owner rm -rf -- "$(node_dir "$node")"
    as_owner mkdir -p -- "$(node_dir "$node")" "$(node_sock "$node")"
    bb_log=$(owner_logfile "$BASE/$node-basebackup.log")
    if ! as_owner "$PG_BIN/pg_basebackup" -h "$HOST" -p "$PG_PORT" -U "$PG_SUPERUSER" -w \
        -D "$data" -X stream -R -c fast --no-sync >>"$bb_log" 2>&1; then
        die_log "$bb_log" "pg_basebackup for $node failed"
    fi
    write_node_conf "$node"
}

replica_valid() { # NODE: data dir looks like a standby created by us
    local data
    data=$(node_data "$1")
    [[ -f $data/PG_VERSION && -f $data/standby.signal && -f $data/dlb_testenv.conf ]]
}

# ensure_replica NODE: make NODE run (start, or rebuild if needed).
ensure_replica() {
    local node=$1
    if node_running "$node"; then
        return 0
    fi
    if replica_valid "$node"; then
        if port_in_use "$(node_port "$node")"; then
            die "port $(node_port "$node") on $HOST is already in use by another process; stop it or choose another port"
        fi
        as_owner mkdir -p -- "$(node_sock "$node")"
        log "starting $node (port $(node_port "$node"))"
        CHANGED=1
        if as_owner "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$(node_data "$node")" -l "$(node_log "$node")" >/dev/null; then
            return 0
        fi
        warn "$node failed to start (see $(node_log "$node")); recreating it"
        as_owner "$PG_BIN/pg_ctl" stop -m immediate -D "$(node_data "$node")" >/dev/null 2>&1 || true
    fi
    create_replica "$node"
    pg_start "$node"
}

wait_replica_ready() { # NODE
    local node=$1 logfile
    logfile=$(node_log "$node")
    wait_until "$TIMEOUT" "$node to answer on port $(node_port "$node")" "$logfile" node_answers "$node"
    wait_until "$TIMEOUT" "$node to be in recovery (pg_is_in_recovery() = t)" "$logfile" node_in_recovery "$node"
    wait_until "$TIMEOUT" "$node to stream from the primary (pg_stat_replication)" "$logfile" replica_streaming "$node"
}

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

# Redis instances: "redis" (standalone, $REDIS_PORT) and "redis-c1".."redis-c3" (the three
# masters of a Redis Cluster, $CLUSTER_PORT..+2), each with its own directory.
redis_port() { # NAME
    case $1 in
    redis) echo "$REDIS_PORT" ;;
    redis-c1) echo "$CLUSTER_PORT" ;;
    redis-c2) echo $((CLUSTER_PORT + 1)) ;;
    redis-c3) echo $((CLUSTER_PORT + 2)) ;;
    redis-tls) echo "$TLS_PORT" ;;
    *) die "unknown redis instance '$1'" ;;
    esac
}
redis_dir() { echo "$BASE/$1"; }
redis_pidfile() { echo "$BASE/$1/redis.pid"; }
redis_log() { echo "$BASE/$1/redis.log"; }

redis_pid() { # NAME
    local pid pidfile
    pidfile=$(redis_pidfile "$1")
    [[ -r $pidfile ]] || return 1
    pid=$(head -n 1 -- "$pidfile" 2>/dev/null) || return 1 # redis removes it as it exits
    pid_alive "$pid" || return 1
    grep -q redis "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

redis_has_pid() { redis_pid "$1" >/dev/null; }

# redis_cli NAME ARGS...: redis-cli to instance NAME (over TLS for redis-tls).
redis_cli() {
    local name=$1
    shift
    local -a tls=()
    [[ $name == redis-tls ]] && tls=(--tls --cacert "$(redis_dir redis-tls)/ca.pem")
    redis-cli -h "$HOST" -p "$(redis_port "$name")" "${tls[@]}" "$@"
}

redis_ping() { # NAME
    [[ $(redis_cli "$1" ping 2>/dev/null) == PONG ]]
}

# tls_certs DIR: a test CA and a server certificate for 127.0.0.1 signed by it (once).
tls_certs() {
    local d=$1
    [[ -s $d/ca.pem && -s $d/server.pem && -s $d/server.key ]] && return 0
    log "creating a test CA and a TLS certificate for $HOST"
    printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$HOST" |
        owner_write "$d/server.ext"
    {
        as_owner openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dlb test CA" \
            -keyout "$d/ca.key" -out "$d/ca.pem" &&
            as_owner openssl req -newkey rsa:2048 -nodes -subj "/CN=$HOST" \
                -keyout "$d/server.key" -out "$d/server.csr" &&
            as_owner openssl x509 -req -days 3650 -in "$d/server.csr" -CA "$d/ca.pem" \
                -CAkey "$d/ca.key" -CAcreateserial -extfile "$d/server.ext" -out "$d/server.pem"
    } >"$d/openssl.log" 2>&1 || die_log "$d/openssl.log" "creating the test TLS certificates failed"
}

redis_start() { # NAME
    local name=$1 port logfile pidfile
    local -a extra=()
    port=$(redis_port "$name")
    logfile=$(redis_log "$name")
    pidfile=$(redis_pidfile "$name")
    if redis_pid "$name" >/dev/null; then
        wait_until "$TIMEOUT" "$name to answer PING on port $port" "$logfile" redis_ping "$name"
        return 0
    fi
    if port_in_use "$port"; then
        die "port $port on $HOST is already in use by another process; stop it or set DLB_TESTENV_REDIS_PORT / DLB_TESTENV_REDIS_CLUSTER_PORT"
    fi
    if [[ $name == redis-tls ]]; then
        as_owner mkdir -p -- "$(redis_dir "$name")"
        tls_certs "$(redis_dir "$name")"
        # No plain port: TLS only, server certificate from the test CA, no client certificates.
        extra=(--port 0 --tls-port "$port" --tls-cert-file "$(redis_dir "$name")/server.pem"
            --tls-key-file "$(redis_dir "$name")/server.key"
            --tls-ca-cert-file "$(redis_dir "$name")/ca.pem" --tls-auth-clients no)
    fi
    if [[ $name == redis-c* ]]; then
        # A cluster node restarts from scratch: the cluster is (re)created by cluster_ensure.
        as_owner rm -rf -- "$(redis_dir "$name")"
        # The cluster bus port is explicit (the default, port + 10000, does not exist here).
        extra=(--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
            --cluster-port $((port + 100)))
    fi
    as_owner mkdir -p -- "$(redis_dir "$name")"
    as_owner rm -f -- "$pidfile"
    log "starting $name (port $port)"
    CHANGED=1
    if ! as_owner redis-server --port "$port" --bind "$HOST" --save '' --appendonly no \
        --daemonize yes --pidfile "$pidfile" --logfile "$logfile" --dir "$(redis_dir "$name")" \
        "${extra[@]}"; then
        die_log "$logfile" "redis-server ($name) failed to start"
    fi
    wait_until "$TIMEOUT" "$name to answer PING on port $port" "$logfile" redis_ping "$name"
    wait_until "$TIMEOUT" "$name pid file $pidfile" "$logfile" redis_has_pid "$name"
}

# The standalone Redis also has an ACL user with a password (tests of authenticated stores);
# the default user stays passwordless. Redis keeps nothing on disk, so every start sets it.
REDIS_USER=dlb
REDIS_PASSWORD=dlb-test-secret
redis_standalone_start() {
    redis_start redis
    redis-cli -h "$HOST" -p "$REDIS_PORT" ACL SETUSER "$REDIS_USER" on ">$REDIS_PASSWORD" '~*' '+@all' >/dev/null ||
        die_log "$(redis_log redis)" "ACL SETUSER $REDIS_USER failed"
}

redis_gone() { ! redis_pid "$1" >/dev/null; }

redis_stop() { # NAME
    local pid
    pid=$(redis_pid "$1") || return 0
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    wait_until "$TIMEOUT" "$1 (pid $pid) to exit" "$(redis_log "$1")" redis_gone "$1"
}

CLUSTER_NODES=(redis-c1 redis-c2 redis-c3)

cluster_ok_on() { # NAME: the node sees the cluster as ok with all 16384 slots assigned.
    local info
    info=$(redis-cli -h "$HOST" -p "$(redis_port "$1")" cluster info 2>/dev/null) || return 1
    [[ $info == *cluster_state:ok* && $info == *cluster_slots_assigned:16384* && $info == *cluster_known_nodes:3* ]]
}

cluster_ok() {
    local n
    for n in "${CLUSTER_NODES[@]}"; do cluster_ok_on "$n" || return 1; done
}

cluster_ensure() {
    local n
    local -a addrs=()
    for n in "${CLUSTER_NODES[@]}"; do
        redis_start "$n"
        addrs+=("$HOST:$(redis_port "$n")")
    done
    cluster_ok && return 0
    if redis-cli -h "$HOST" -p "$CLUSTER_PORT" cluster info 2>/dev/null | grep -q 'cluster_slots_assigned:0'; then
        log "creating the Redis Cluster (3 masters: ${addrs[*]})"
        CHANGED=1
        redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
            >"$BASE/redis-c1/create.log" 2>&1 ||
            die_log "$BASE/redis-c1/create.log" "redis-cli --cluster create failed"
    fi
    wait_until "$TIMEOUT" "the Redis Cluster to be ok on every node" "$BASE/redis-c1/redis.log" cluster_ok
}

cluster_urls() {
    local n sep=""
    for n in "${CLUSTER_NODES[@]}"; do
        printf '%sredis://%s:%s' "$sep" "$HOST" "$(redis_port "$n")"
        sep=","
    done
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

teardown() {
    local n
    if [[ -d $BASE ]]; then
        for n in replica2 replica1 primary; do
            pg_stop "$n" fast
        done
        for n in redis redis-tls "${CLUSTER_NODES[@]}"; do
            redis_stop "$n"
        done
    fi
    remove_base
}

cmd_up() {
    check_settings
    check_user
    check_pg_bin
    check_redis_bin
    check_socket_path
    take_lock
    local start=$SECONDS

    if [[ -e $MARKER ]] && ! node_running primary; then
        if [[ $(pg_query "$PG_PORT" postgres 'SHOW data_directory') == "$(node_data primary)" ]]; then
            die "the primary of $BASE answers on port $PG_PORT but pg_ctl (as $RUN_AS) cannot see it; refusing to touch it"
        fi
        log "stale environment in $BASE (primary not running); recreating it"
        CHANGED=1
        teardown
    fi
    ensure_base

    if node_running primary; then
        node_is_primary primary || wait_until "$TIMEOUT" "primary to answer on port $PG_PORT" "$(node_log primary)" node_is_primary primary
    else
        as_owner rm -rf -- "$(node_dir primary)"
        create_primary
        pg_start primary
        wait_until "$TIMEOUT" "primary to answer on port $PG_PORT" "$(node_log primary)" node_is_primary primary
    fi

    ensure_replica replica1
    ensure_replica replica2

    wait_replica_ready replica1
    wait_replica_ready replica2
    wait_until "$TIMEOUT" "2 streaming replicas in pg_stat_replication on the primary" "$(node_log primary)" both_streaming

    if [[ $(pg_query "$PG_PORT" postgres "SELECT count(*) FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
        log "creating database $DB"
        CHANGED=1
        pg_query "$PG_PORT" postgres "CREATE DATABASE $DB" >/dev/null ||
            die_log "$(node_log primary)" "CREATE DATABASE $DB failed"
    fi
    wait_until "$TIMEOUT" "database $DB on replica1" "$(node_log replica1)" db_visible replica1
    wait_until "$TIMEOUT" "database $DB on replica2" "$(node_log replica2)" db_visible replica2

    redis_standalone_start
    redis_start redis-tls
    cluster_ensure

    if ((CHANGED)); then
        log "up in $((SECONDS - start))s"
    else
        log "already up; verified (nothing to do)"
    fi
    log "primary $HOST:$PG_PORT, replicas $HOST:$R1_PORT,$HOST:$R2_PORT, redis $HOST:$REDIS_PORT, redis cluster $(cluster_urls) (dir $BASE)"
    log "use: eval \"\$($SCRIPT_PATH env)\""
}

cmd_down() {
    check_settings
    take_lock
    if [[ ! -e $BASE ]]; then
        log "nothing to do ($BASE does not exist)"
        return 0
    fi
    if [[ -e $MARKER ]]; then
        check_user
        check_pg_bin
    fi
    teardown
    log "down ($BASE removed)"
}

# sq STRING: single-quote STRING for the shell.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

cmd_env() {
    printf 'export DLB_TEST_PRIMARY=%s\n' "$(sq "host=$HOST port=$PG_PORT user=$PG_SUPERUSER dbname=$DB")"
    printf 'export DLB_TEST_REPLICAS=%s\n' "$(sq "$HOST:$R1_PORT,$HOST:$R2_PORT")"
    printf 'export DLB_TEST_REDIS=%s\n' "$(sq "redis://$HOST:$REDIS_PORT")"
    printf 'export DLB_TEST_REDIS_CLUSTER=%s\n' "$(sq "$(cluster_urls)")"
    printf 'export DLB_TEST_REDIS_AUTH=%s\n' "$(sq "redis://$REDIS_USER:$REDIS_PASSWORD@$HOST:$REDIS_PORT")"
    printf 'export DLB_TEST_REDIS_TLS=%s\n' "$(sq "rediss://$HOST:$TLS_PORT")"
    printf 'export DLB_TEST_REDIS_TLS_CA=%s\n' "$(sq "$(redis_dir redis-tls)/ca.pem")"
    printf 'export DLB_TESTENV_DIR=%s\n' "$(sq "$BASE")"
    printf 'export DLB_PG_BIN=%s\n' "$(sq "$PG_BIN")"
    printf 'export DLB_TESTENV_SCRIPT=%s\n' "$(sq "$SCRIPT_PATH")"
}

cmd_status() {
    check_settings
    check_user
    check_pg_bin
    local ok=0 n port info state
    echo "base dir: $BASE$([[ -e $MARKER ]] || echo ' (absent)')"
    for n in "${NODES[@]}"; do
        port=$(node_port "$n")
        if [[ -e $MARKER ]] && node_running "$n"; then
            if [[ $n == primary ]]; then
                if node_is_primary "$n"; then
                    info="primary, streaming replicas: $(streaming_count)/2"
                else
                    info="NOT ANSWERING"
                    ok=1
                fi
            else
                state=$(pg_query "$port" postgres \
                    "SELECT CASE WHEN pg_is_in_recovery() THEN 'in recovery, replay ' || pg_get_wal_replay_pause_state() ELSE 'NOT IN RECOVERY' END") || state=""
                if [[ -z $state ]]; then
                    info="NOT ANSWERING"
                    ok=1
                else
                    [[ $state == "in recovery"* ]] || ok=1
                    info="replica, $state, $(replica_streaming "$n" && echo streaming || echo 'not streaming')"
                fi
            fi
            printf '%-9s %s:%-5s up (pid %s)  %s\n' "$n" "$HOST" "$port" "$(node_pid "$n")" "$info"
        else
            printf '%-9s %s:%-5s DOWN\n' "$n" "$HOST" "$port"
            ok=1
        fi
    done
    local rpid
    for n in redis redis-tls "${CLUSTER_NODES[@]}"; do
        port=$(redis_port "$n")
        if [[ -e $MARKER ]] && rpid=$(redis_pid "$n") && redis_ping "$n"; then
            info=PONG
            if [[ $n == redis-c* ]]; then
                if cluster_ok_on "$n"; then info="PONG, cluster ok"; else info="PONG, CLUSTER NOT OK" ok=1; fi
            fi
            printf '%-9s %s:%-5s up (pid %s)  %s\n' "$n" "$HOST" "$port" "$rpid" "$info"
        else
            printf '%-9s %s:%-5s DOWN\n' "$n" "$HOST" "$port"
            ok=1
        fi
    done
    if ((ok == 0)); then echo "all up"; else echo "NOT all up"; fi
    return "$ok"
}

require_env() {
    [[ -e $MARKER ]] || die "no test environment in $BASE; run: $SCRIPT_PATH up"
}

cmd_stop_replica() {
    local node
    node=$(replica_node "${1-}")
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    if node_running "$node"; then
        pg_stop "$node" immediate
        log "$node stopped"
    else
        log "$node already stopped"
    fi
}

cmd_start_replica() {
    local node
    node=$(replica_node "${1-}")
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    replica_valid "$node" || die "$node has no valid data dir; run: $SCRIPT_PATH up"
    if node_running "$node"; then
        log "$node already running"
    else
        as_owner mkdir -p -- "$(node_sock "$node")"
        if port_in_use "$(node_port "$node")"; then
            die "port $(node_port "$node") on $HOST is already in use by another process"
        fi
        log "starting $node (port $(node_port "$node"))"
        as_owner "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$(node_data "$node")" -l "$(node_log "$node")" >/dev/null ||
            die_log "$(node_log "$node")" "pg_ctl start failed for $node"
    fi
    wait_replica_ready "$node"
    log "$node running, in recovery and streaming"
}

cmd_replay() { # pause|resume N
    local what=$1 node port state
    node=$(replica_node "${2-}")
    check_settings
    check_pg_bin
    require_env
    take_lock
    port=$(node_port "$node")
    node_answers "$node" || die_log "$(node_log "$node")" "$node (port $port) does not answer"
    pg_query "$port" postgres "SELECT pg_wal_replay_$what()" >/dev/null ||
        die_log "$(node_log "$node")" "pg_wal_replay_$what() failed on $node"
    state=$(pg_query "$port" postgres "SELECT pg_get_wal_replay_pause_state()") || state="?"
    log "$node: WAL replay ${what}d (state: $state)"
}

cmd_redis() { # stop|start
    check_settings
    check_redis_bin
    require_env
    take_lock
    if [[ $1 == stop ]]; then
        redis_stop redis
        log "redis stopped"
    else
        redis_standalone_start
        log "redis running"
    fi
}

cmd_psql() {
    local node
    node=$(any_node "${1-}")
    shift
    check_pg_bin
    exec "$PG_BIN/psql" -X -h "$HOST" -p "$(node_port "$node")" -U "$PG_SUPERUSER" -d "$DB" "$@"
}

usage() {
    cat <<EOF
Usage: $(basename -- "$0") COMMAND [ARGS]
  up | down | env | status
  stop-replica N | start-replica N | pause-replica N | resume-replica N   (N = 1|2)
  stop-redis | start-redis   (the standalone Redis)
  psql primary|1|2 [psql args...]
EOF
}

main() {
    local cmd=${1-}
    (($# > 0)) && shift
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    stop-replica) cmd_stop_replica "$@" ;;
    start-replica) cmd_start_replica "$@" ;;
    pause-replica) cmd_replay pause "$@" ;;
    resume-replica) cmd_replay resume "$@" ;;
    stop-redis) cmd_redis stop ;;
    start-redis) cmd_redis start ;;
    psql)
        (($# > 0)) || die "usage: psql primary|1|2 [psql args...]"
        cmd_psql "$@"
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
