#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# dlb test environment: one PostgreSQL primary, two streaming hot-standby
# replicas, a second independent PostgreSQL cluster ("cluster 2": its own initdb,
# a primary and two streaming replicas), one Redis (and a TLS-only one) and a Redis Cluster of three masters, all on 127.0.0.1
# with their own ports, all state
# under one base directory.
#
# Usage: testenv.sh COMMAND [ARGS]
#   up                  create/start everything (idempotent; repairs a partial env)
#   down                stop everything and remove the base dir (idempotent)
#   env                 print `export` lines for the test suite (eval-safe)
#   status              show what runs; exit 0 iff everything is up
#   stop-replica N [MODE]  stop replica N (1|2) with -m MODE: immediate (default), fast
#                       or smart (idempotent)
#   start-replica N     start replica N and wait until it is in recovery and streaming
#   pause-replica N     SELECT pg_wal_replay_pause() on replica N
#   resume-replica N    SELECT pg_wal_replay_resume() on replica N
#   restart-primary [MODE]  restart the primary (-m fast, the default, or immediate) and
#                       wait until it answers and both replicas stream from it again
#   stop-primary        stop the primary (-m fast; idempotent): for the `dlb check` test
#   start-primary       start it (when stopped) and wait until it answers and both replicas
#                       stream from it again
#   stop-redis          stop the standalone Redis (idempotent)
#   start-redis         start it again and wait until it answers PING
#   reset-cluster2      rebuild cluster 2 from scratch (after the failover drill)
#   psql NODE [ARGS]    psql to NODE (primary|1|2|c2|c2-1|c2-2) as postgres on dlb_test
#
# Replica numbers N are 1|2 for the main cluster, c2-1|c2-2 for cluster 2.
#
# Environment:
#   DLB_TESTENV_DIR            base dir                (default /tmp/dlb-testenv)
#   DLB_TESTENV_PG_PORT        primary port            (default 55432)
#   DLB_TESTENV_REPLICA1_PORT  replica 1 port          (default primary+1)
#   DLB_TESTENV_REPLICA2_PORT  replica 2 port          (default primary+2)
#   DLB_TESTENV_CLUSTER2_PORT  cluster 2 primary port  (default primary+10)
#   DLB_TESTENV_CLUSTER2_REPLICA1_PORT  cluster 2 replica 1 port (default cluster 2 primary+1)
#   DLB_TESTENV_CLUSTER2_REPLICA2_PORT  cluster 2 replica 2 port (default cluster 2 primary+2)
#   DLB_TESTENV_TLS_PG_PORT    TLS-only PostgreSQL primary port (default primary+20; its
#                              replicas +1, +2)
#   DLB_TESTENV_REDIS_PORT     Redis port              (default 56379)
#   DLB_TESTENV_REDIS_TLS_PORT TLS-only Redis port     (default Redis+4)
#   DLB_TESTENV_REDIS_CLUSTER_PORT  first of the 3 Redis Cluster masters' ports (default Redis+1;
#                              their cluster bus ports are these + 100)
#   DLB_TESTENV_TIMEOUT        seconds for every wait  (default 60)
#   DLB_TESTENV_ONLY_PG        1: `up` starts only the primary and its two replicas (the demo)
#   DLB_PG_BIN                 PostgreSQL bin dir      (default: highest /usr/lib/postgresql/*/bin)
#
# When run as root, PostgreSQL and Redis run as the `postgres` user (via
# runuser) and the base dir is owned by it.  Otherwise they run as the
# invoking user, who must own the base dir.
#
# This file is the entry point (settings and commands); the helpers live in
# scripts/testenv/common.sh, postgres.sh and redis.sh, sourced below.
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
C2_PORT="${DLB_TESTENV_CLUSTER2_PORT:-$((PG_PORT + 10))}"
C2_R1_PORT="${DLB_TESTENV_CLUSTER2_REPLICA1_PORT:-$((C2_PORT + 1))}"
C2_R2_PORT="${DLB_TESTENV_CLUSTER2_REPLICA2_PORT:-$((C2_PORT + 2))}"
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
CHANGED=0 # set when `up` had to start or create something

# The parts, by service: they define functions and only their own settings (NODES and PG_BIN
# in postgres.sh; CLUSTER_NODES and the Redis ACL user in redis.sh). This file keeps the
# shared settings above and the commands below.
TESTENV_LIB="$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/testenv" # also when run through a symlink
# shellcheck source=testenv/common.sh
source "$TESTENV_LIB/common.sh"
# shellcheck source=testenv/postgres.sh
source "$TESTENV_LIB/postgres.sh"
# shellcheck source=testenv/redis.sh
source "$TESTENV_LIB/redis.sh"
# shellcheck source=testenv/postgres_tls.sh
source "$TESTENV_LIB/postgres_tls.sh"

check_settings() {
    local v
    for v in "$PG_PORT" "$R1_PORT" "$R2_PORT" "$C2_PORT" "$C2_R1_PORT" "$C2_R2_PORT" "$REDIS_PORT" "$CLUSTER_PORT" "$TLS_PORT" "$TIMEOUT"; do
        [[ $v =~ ^[0-9]+$ ]] || die "ports and DLB_TESTENV_TIMEOUT must be numbers (got '$v')"
    done
    [[ $BASE == /* ]] || die "DLB_TESTENV_DIR must be an absolute path (got '$BASE')"
    [[ $BASE != / ]] || die "DLB_TESTENV_DIR must not be /"
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

teardown() {
    local n
    if [[ -d $BASE ]]; then
        for n in replica2 replica1 primary c2replica2 c2replica1 c2primary; do
            pg_stop "$n" fast
        done
        for n in redis redis-tls "${CLUSTER_NODES[@]}"; do
            redis_stop "$n"
        done
        tls_cluster_down
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
        mark_changed
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
    ensure_database primary

    # The demo needs only the primary and its two replicas (DLB_TESTENV_ONLY_PG=1).
    if [[ ${DLB_TESTENV_ONLY_PG:-0} != 1 ]]; then
        cluster2_ensure

        redis_standalone_start
        redis_start redis-tls
        cluster_ensure
        tls_cluster_up
    fi

    if ((CHANGED)); then
        log "up in $((SECONDS - start))s"
    else
        log "already up; verified (nothing to do)"
    fi
    log "primary $HOST:$PG_PORT, replicas $HOST:$R1_PORT,$HOST:$R2_PORT, cluster 2 $HOST:$C2_PORT (replicas $HOST:$C2_R1_PORT,$HOST:$C2_R2_PORT), redis $HOST:$REDIS_PORT, redis cluster $(cluster_urls) (dir $BASE)"
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

cmd_env() {
    printf 'export DLB_TEST_PRIMARY=%s\n' "$(sq "host=$HOST port=$PG_PORT user=$PG_SUPERUSER dbname=$DB")"
    printf 'export DLB_TEST_REPLICAS=%s\n' "$(sq "$HOST:$R1_PORT,$HOST:$R2_PORT")"
    printf 'export DLB_TEST_CLUSTER2_PRIMARY=%s\n' "$(sq "host=$HOST port=$C2_PORT user=$PG_SUPERUSER dbname=$DB")"
    printf 'export DLB_TEST_CLUSTER2_REPLICAS=%s\n' "$(sq "$HOST:$C2_R1_PORT,$HOST:$C2_R2_PORT")"
    printf 'export DLB_TEST_REDIS=%s\n' "$(sq "redis://$HOST:$REDIS_PORT")"
    printf 'export DLB_TEST_REDIS_CLUSTER=%s\n' "$(sq "$(cluster_urls)")"
    printf 'export DLB_TEST_REDIS_AUTH=%s\n' "$(sq "redis://$REDIS_USER:$REDIS_PASSWORD@$HOST:$REDIS_PORT")"
    printf 'export DLB_TEST_REDIS_TLS=%s\n' "$(sq "rediss://$HOST:$TLS_PORT")"
    printf 'export DLB_TEST_REDIS_TLS_CA=%s\n' "$(sq "$(redis_dir redis-tls)/ca.pem")"
    tls_cluster_env
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
    for n in "${NODES[@]}" "${C2_NODES[@]}"; do
        port=$(node_port "$n")
        if [[ -e $MARKER ]] && node_running "$n"; then
            if [[ $n == primary || $n == c2primary ]]; then
                if node_is_primary "$n"; then
                    info="primary, streaming replicas: $(streaming_count "$n")/2"
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
            printf '%-10s %s:%-5s up (pid %s)  %s\n' "$n" "$HOST" "$port" "$(node_pid "$n")" "$info"
        else
            printf '%-10s %s:%-5s DOWN\n' "$n" "$HOST" "$port"
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
            printf '%-10s %s:%-5s up (pid %s)  %s\n' "$n" "$HOST" "$port" "$rpid" "$info"
        else
            printf '%-10s %s:%-5s DOWN\n' "$n" "$HOST" "$port"
            ok=1
        fi
    done
    tls_cluster_status || ok=1
    if ((ok == 0)); then echo "all up"; else echo "NOT all up"; fi
    return "$ok"
}

require_env() {
    [[ -e $MARKER ]] || die "no test environment in $BASE; run: $SCRIPT_PATH up"
}

stop_mode() { # MODE: a pg_ctl shutdown mode, or die
    case ${1-} in
    immediate | fast | smart) echo "$1" ;;
    *) die "stop mode must be immediate, fast or smart (got '${1-}')" ;;
    esac
}

cmd_stop_replica() {
    local node mode
    node=$(replica_node "${1-}")
    mode=$(stop_mode "${2:-immediate}")
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    if node_running "$node"; then
        pg_stop "$node" "$mode"
        log "$node stopped (-m $mode)"
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

cmd_restart_primary() {
    local mode
    mode=$(stop_mode "${1:-fast}")
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    pg_stop primary "$mode"
    pg_start primary
    wait_until "$TIMEOUT" "primary to answer on port $PG_PORT" "$(node_log primary)" node_is_primary primary
    wait_until "$TIMEOUT" "2 streaming replicas in pg_stat_replication on the primary" "$(node_log primary)" both_streaming
    log "primary restarted (-m $mode), both replicas streaming"
}

cmd_stop_primary() {
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    pg_stop primary fast
    log "primary stopped"
}

cmd_start_primary() {
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    node_running primary || pg_start primary
    wait_until "$TIMEOUT" "primary to answer on port $PG_PORT" "$(node_log primary)" node_is_primary primary
    wait_until "$TIMEOUT" "2 streaming replicas in pg_stat_replication on the primary" "$(node_log primary)" both_streaming
    log "primary running, both replicas streaming"
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

cmd_reset_cluster2() {
    check_settings
    check_user
    check_pg_bin
    require_env
    take_lock
    local start=$SECONDS
    log "rebuilding cluster 2"
    cluster2_remove
    cluster2_ensure
    log "cluster 2 rebuilt in $((SECONDS - start))s: primary $HOST:$C2_PORT, replicas $HOST:$C2_R1_PORT,$HOST:$C2_R2_PORT"
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
  stop-replica N [immediate|fast|smart] | start-replica N | pause-replica N | resume-replica N
                                                                        (N = 1|2|c2-1|c2-2)
  restart-primary [fast|immediate] | stop-primary | start-primary
  reset-cluster2
  stop-redis | start-redis   (the standalone Redis)
  psql primary|1|2|c2|c2-1|c2-2 [psql args...]
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
    restart-primary) cmd_restart_primary "$@" ;;
    stop-primary) cmd_stop_primary ;;
    start-primary) cmd_start_primary ;;
    pause-replica) cmd_replay pause "$@" ;;
    resume-replica) cmd_replay resume "$@" ;;
    reset-cluster2) cmd_reset_cluster2 ;;
    stop-redis) cmd_redis stop ;;
    start-redis) cmd_redis start ;;
    psql)
        (($# > 0)) || die "usage: psql primary|1|2|c2|c2-1|c2-2 [psql args...]"
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
