# shellcheck shell=bash
# Part of scripts/testenv.sh, which sources it (not a command of its own): the PostgreSQL
# primary and its two streaming replicas, and cluster 2 (its own initdb, so another
# system_identifier: a primary and two streaming replicas) (binaries, nodes, queries, creation,
# start/stop).
#
# Uses the settings testenv.sh defines before sourcing it (BASE, HOST, DB, PG_SUPERUSER,
# PG_PORT, R1_PORT, R2_PORT, C2_PORT, C2_R1_PORT, C2_R2_PORT, TIMEOUT) and the helpers of
# common.sh.

NODES=(primary replica1 replica2)
C2_NODES=(c2primary c2replica1 c2replica2)

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

node_port() {
    case $1 in
    primary) echo "$PG_PORT" ;;
    replica1) echo "$R1_PORT" ;;
    replica2) echo "$R2_PORT" ;;
    c2primary) echo "$C2_PORT" ;;
    c2replica1) echo "$C2_R1_PORT" ;;
    c2replica2) echo "$C2_R2_PORT" ;;
    *) die "unknown node '$1'" ;;
    esac
}

# node_upstream NODE: the primary a replica streams from.
node_upstream() {
    case $1 in
    replica1 | replica2) echo primary ;;
    c2replica1 | c2replica2) echo c2primary ;;
    *) die "'$1' is not a replica" ;;
    esac
}

# replicas_of PRIMARY: its two replicas.
replicas_of() {
    case $1 in
    primary) echo replica1 replica2 ;;
    c2primary) echo c2replica1 c2replica2 ;;
    *) die "'$1' is not a primary" ;;
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
    c2-1 | c2replica1) echo c2replica1 ;;
    c2-2 | c2replica2) echo c2replica2 ;;
    *) die "replica must be 1 or 2 (or c2-1|c2-2 for cluster 2; got '${1-}')" ;;
    esac
}

# any_node ARG: primary|1|2 (and aliases) to a node name.
any_node() {
    case ${1-} in
    primary | p | 0) echo primary ;;
    c2 | c2primary) echo c2primary ;;
    *) replica_node "${1-}" ;;
    esac
}

# pg_query PORT DB SQL: run SQL, print the unaligned tuples-only result.
# Fails quietly when the server does not answer.
pg_query() {
    PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$HOST" -p "$1" -U "$PG_SUPERUSER" -d "$2" -c "$3" 2>/dev/null
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

# replica_streaming NODE: its primary sees NODE's walreceiver streaming.
replica_streaming() {
    [[ $(pg_query "$(node_port "$(node_upstream "$1")")" postgres \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'dlb-$1' AND state = 'streaming'") == 1 ]]
}

# streaming_count [PRIMARY]: how many of its two replicas stream from PRIMARY (default primary).
streaming_count() {
    local p=${1:-primary} a b
    read -r a b <<<"$(replicas_of "$p")"
    pg_query "$(node_port "$p")" postgres \
        "SELECT count(*) FROM pg_stat_replication WHERE application_name IN ('dlb-$a', 'dlb-$b') AND state = 'streaming'" ||
        echo 0
}

both_streaming() { [[ $(streaming_count "${1:-primary}") == 2 ]]; }

db_visible() { # NODE
    [[ $(pg_query "$(node_port "$1")" postgres "SELECT count(*) FROM pg_database WHERE datname = '$DB'") == 1 ]]
}

check_socket_path() {
    local n p
    for n in "${NODES[@]}" "${C2_NODES[@]}"; do
        p="$(node_sock "$n")/.s.PGSQL.$(node_port "$n")"
        ((${#p} < 100)) || die "unix socket path too long (${#p} chars): $p; use a shorter DLB_TESTENV_DIR"
    done
}

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
    if [[ $node == c2* ]]; then
        # The drills push cluster 2's WAL past the main cluster's with pg_switch_wal(): new
        # segments need not be zero-filled for that.
        echo "wal_init_zero = off" | as_owner tee -a -- "$(node_data "$node")/dlb_testenv.conf" >/dev/null
    fi
}

pg_start() { # NODE
    local node=$1 logfile
    logfile=$(node_log "$node")
    log "starting $node (port $(node_port "$node"))"
    mark_changed
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

create_primary() { # [NODE] (default primary)
    local node=${1:-primary} data initdb_log
    data=$(node_data "$node")
    log "initdb $node in $data"
    mark_changed
    as_owner mkdir -p -- "$(node_dir "$node")" "$(node_sock "$node")"
    initdb_log=$(owner_logfile "$BASE/$node-initdb.log")
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
    write_node_conf "$node"
}

create_replica() { # NODE
    local node=$1 data bb_log upstream
    data=$(node_data "$node")
    upstream=$(node_upstream "$node")
    log "pg_basebackup $node from $upstream"
    mark_changed
    as_owner rm -rf -- "$(node_dir "$node")"
    as_owner mkdir -p -- "$(node_dir "$node")" "$(node_sock "$node")"
    bb_log=$(owner_logfile "$BASE/$node-basebackup.log")
    if ! as_owner "$PG_BIN/pg_basebackup" -h "$HOST" -p "$(node_port "$upstream")" -U "$PG_SUPERUSER" -w \
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
        mark_changed
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
    wait_until "$TIMEOUT" "$node to stream from $(node_upstream "$node") (pg_stat_replication)" "$logfile" replica_streaming "$node"
}

# ensure_database PRIMARY: the test database exists on PRIMARY and has reached its replicas.
ensure_database() {
    local p=$1 n
    if [[ $(pg_query "$(node_port "$p")" postgres "SELECT count(*) FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
        log "creating database $DB on $p"
        mark_changed
        pg_query "$(node_port "$p")" postgres "CREATE DATABASE $DB" >/dev/null ||
            die_log "$(node_log "$p")" "CREATE DATABASE $DB failed on $p"
    fi
    for n in $(replicas_of "$p"); do
        wait_until "$TIMEOUT" "database $DB on $n" "$(node_log "$n")" db_visible "$n"
    done
}

# ---------------------------------------------------------------------------
# Cluster 2: an independent cluster (its own initdb, so its own system_identifier) with a
# primary and two streaming replicas, for the drills that put a standby of another cluster, or
# one left behind by a failover, behind a replica entry. The failover drill promotes one of its
# replicas: `reset-cluster2` rebuilds it, `up` repairs it.
# ---------------------------------------------------------------------------

# cluster2_remove: stop cluster 2 (-m immediate) and remove its data.
cluster2_remove() {
    local n
    for n in c2replica2 c2replica1 c2primary; do
        pg_stop "$n" immediate
        as_owner rm -rf -- "$(node_dir "$n")"
    done
}

# cluster2_ensure: make cluster 2 run as a primary with two streaming replicas (creating it
# when its primary is not running, recreating a promoted replica), with the test database.
cluster2_ensure() {
    local n
    if ! node_running c2primary; then
        [[ ! -e $(node_dir c2primary) ]] || log "cluster 2's primary is not running; recreating cluster 2"
        mark_changed
        cluster2_remove
        create_primary c2primary
        pg_start c2primary
    fi
    wait_until "$TIMEOUT" "c2primary to answer as a primary on port $C2_PORT" "$(node_log c2primary)" node_is_primary c2primary
    for n in c2replica1 c2replica2; do
        if node_running "$n" && node_answers "$n" && ! node_in_recovery "$n"; then
            log "$n is not a standby (promoted?); recreating it"
            mark_changed
            pg_stop "$n" immediate
            as_owner rm -rf -- "$(node_dir "$n")"
        fi
        ensure_replica "$n"
    done
    for n in c2replica1 c2replica2; do
        wait_replica_ready "$n"
    done
    wait_until "$TIMEOUT" "2 streaming replicas in pg_stat_replication on c2primary" "$(node_log c2primary)" both_streaming c2primary
    ensure_database c2primary
}
