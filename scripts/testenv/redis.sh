# shellcheck shell=bash
# Part of scripts/testenv.sh, which sources it (not a command of its own): the standalone
# Redis (with an ACL user), the TLS-only Redis and the Redis Cluster of three masters.
#
# Uses the settings testenv.sh defines before sourcing it (BASE, HOST, REDIS_PORT,
# CLUSTER_PORT, TLS_PORT, TIMEOUT) and the helpers of common.sh.

check_redis_bin() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found; run scripts/bootstrap.sh"
    command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found; run scripts/bootstrap.sh"
}

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
        # Checked here: a taken bus port only shows in the log, as a PING that never comes.
        if port_in_use $((port + 100)); then
            die "cluster bus port $((port + 100)) of $name on $HOST is already in use by another process; set DLB_TESTENV_REDIS_CLUSTER_PORT"
        fi
        # A cluster node restarts from scratch: the cluster is (re)created by cluster_ensure.
        as_owner rm -rf -- "$(redis_dir "$name")"
        # The cluster bus port is explicit (the default, port + 10000, does not exist here).
        extra=(--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
            --cluster-port $((port + 100)))
    fi
    as_owner mkdir -p -- "$(redis_dir "$name")"
    as_owner rm -f -- "$pidfile"
    log "starting $name (port $port)"
    mark_changed
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
        mark_changed
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
