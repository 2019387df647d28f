# shellcheck shell=bash
# Part of scripts/testenv.sh, which sources it (not a command of its own): a TLS-only
# PostgreSQL cluster for the TLS tests: a primary and two streaming replicas that accept
# TLS connections only (`hostssl` lines, no `host` line), with certificates from the test CA
# of the TLS Redis (redis.sh). The primary and replica 1 present a certificate for 127.0.0.1
# and localhost; replica 2 one for another name (verify-full must refuse it, verify-ca
# accept it). The user `dlb_cert` must present a client certificate (clientcert=verify-full);
# the user `dlb_scram` must give its password with SCRAM-SHA-256 (the channel binding tests:
# over TLS the server offers SCRAM-SHA-256-PLUS).
# The main cluster (postgres.sh) keeps ssl=off: the server that refuses TLS.
#
# Uses the settings testenv.sh defines before sourcing it (BASE, HOST, DB, PG_SUPERUSER,
# PG_PORT, TIMEOUT), PG_BIN from postgres.sh and the helpers of common.sh and redis.sh.

TLS_PG_PORT="${DLB_TESTENV_TLS_PG_PORT:-$((PG_PORT + 20))}"
TLS_NODES=(tls-primary tls-replica1 tls-replica2)
TLS_CERT_USER=dlb_cert
TLS_SCRAM_USER=dlb_scram
TLS_SCRAM_PASSWORD=dlb-scram-secret
TLS_DIR="$BASE/pg-tls"

tls_node_port() {
    case $1 in
    tls-primary) echo "$TLS_PG_PORT" ;;
    tls-replica1) echo $((TLS_PG_PORT + 1)) ;;
    tls-replica2) echo $((TLS_PG_PORT + 2)) ;;
    *) die "unknown TLS node '$1'" ;;
    esac
}
tls_node_data() { echo "$TLS_DIR/$1/data"; }
tls_node_sock() { echo "$TLS_DIR/$1/sock"; }
tls_node_log() { echo "$TLS_DIR/$1.log"; }

# tls_query NODE SQL: over the node's Unix socket (the TCP port wants TLS).
tls_query() {
    PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "$(tls_node_sock "$1")" -p "$(tls_node_port "$1")" -U "$PG_SUPERUSER" -d postgres -c "$2" 2>/dev/null
}

tls_node_running() {
    local data
    data=$(tls_node_data "$1")
    [[ -f $data/PG_VERSION ]] || return 1
    as_owner "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1 || return 1
    pid_alive "$(head -n 1 -- "$data/postmaster.pid" 2>/dev/null)"
}

tls_node_answers() { [[ $(tls_query "$1" 'SELECT 1') == 1 ]]; }
tls_node_in_recovery() { [[ $(tls_query "$1" 'SELECT pg_is_in_recovery()') == t ]]; }
tls_db_visible() { [[ $(tls_query "$1" "SELECT count(*) FROM pg_database WHERE datname = '$DB'") == 1 ]]; }
tls_streaming() {
    [[ $(tls_query tls-primary "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'dlb-$1' AND state = 'streaming'") == 1 ]]
}

# tls_issue NAME SUBJECT_CN EXT: a certificate NAME.pem/NAME.key signed by the test CA.
tls_issue() {
    local name=$1 cn=$2 ext=$3 ca_dir
    ca_dir=$(redis_dir redis-tls)
    [[ -s $TLS_DIR/$name.pem && -s $TLS_DIR/$name.key ]] && return 0
    printf '%b' "$ext" | owner_write "$TLS_DIR/$name.ext"
    {
        as_owner openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" \
            -keyout "$TLS_DIR/$name.key" -out "$TLS_DIR/$name.csr" &&
            as_owner openssl x509 -req -days 3650 -in "$TLS_DIR/$name.csr" -CA "$ca_dir/ca.pem" \
                -CAkey "$ca_dir/ca.key" -CAcreateserial -extfile "$TLS_DIR/$name.ext" \
                -out "$TLS_DIR/$name.pem" &&
            as_owner chmod 0600 "$TLS_DIR/$name.key"
    } >>"$TLS_DIR/openssl.log" 2>&1 || die_log "$TLS_DIR/openssl.log" "issuing the TLS certificate $name failed"
}

# tls_pg_certs: server certificates, the client certificate of dlb_cert and a second CA that
# signed nothing here (the wrong CA of the verify-ca tests).
tls_pg_certs() {
    local server="basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    as_owner mkdir -p -- "$TLS_DIR" "$(redis_dir redis-tls)"
    tls_certs "$(redis_dir redis-tls)" # the test CA (made once, shared with the TLS Redis)
    as_owner cp -- "$(redis_dir redis-tls)/ca.pem" "$TLS_DIR/ca.pem"
    tls_issue server "localhost" "subjectAltName=IP:$HOST,DNS:localhost\n$server"
    tls_issue other "other.invalid" "subjectAltName=DNS:other.invalid\n$server"
    tls_issue client "$TLS_CERT_USER" "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    if [[ ! -s $TLS_DIR/wrong-ca.pem ]]; then
        as_owner openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dlb wrong CA" \
            -keyout "$TLS_DIR/wrong-ca.key" -out "$TLS_DIR/wrong-ca.pem" >>"$TLS_DIR/openssl.log" 2>&1 ||
            die_log "$TLS_DIR/openssl.log" "creating the wrong CA failed"
    fi
}

# tls_write_conf NODE CERT: the node's settings (TLS on, its certificate, the test CA for
# client certificates), included from postgresql.conf.
tls_write_conf() {
    local node=$1 cert=$2
    owner_write "$(tls_node_data "$node")/dlb_testenv.conf" <<EOF
# Written by testenv.sh (postgres_tls.sh): the TLS-only test cluster.
listen_addresses = '$HOST'
port = $(tls_node_port "$node")
unix_socket_directories = '$(tls_node_sock "$node")'
cluster_name = 'dlb-$node'
max_connections = 100
shared_buffers = 16MB
wal_level = replica
max_wal_senders = 10
wal_keep_size = 64MB
hot_standby = on
wal_receiver_status_interval = 1s
fsync = off
full_page_writes = off
ssl = on
ssl_cert_file = '$TLS_DIR/$cert.pem'
ssl_key_file = '$TLS_DIR/$cert.key'
ssl_ca_file = '$TLS_DIR/ca.pem'
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

tls_pg_start() { # NODE
    local node=$1
    if port_in_use "$(tls_node_port "$node")"; then
        die "port $(tls_node_port "$node") on $HOST is already in use; set DLB_TESTENV_TLS_PG_PORT"
    fi
    log "starting $node (port $(tls_node_port "$node"), TLS only)"
    mark_changed
    as_owner mkdir -p -- "$(tls_node_sock "$node")"
    as_owner "$PG_BIN/pg_ctl" start -w -t "$TIMEOUT" -D "$(tls_node_data "$node")" -l "$(tls_node_log "$node")" >/dev/null ||
        die_log "$(tls_node_log "$node")" "pg_ctl start failed for $node"
}

tls_create_primary() {
    local data
    data=$(tls_node_data tls-primary)
    log "initdb tls-primary in $data"
    as_owner rm -rf -- "$TLS_DIR/tls-primary"
    as_owner mkdir -p -- "$(tls_node_sock tls-primary)"
    as_owner "$PG_BIN/initdb" -D "$data" -U "$PG_SUPERUSER" --auth=trust -E UTF8 --locale=C \
        --no-sync --no-instructions >"$TLS_DIR/initdb.log" 2>&1 || die_log "$TLS_DIR/initdb.log" "initdb (TLS) failed"
    owner_write "$data/pg_hba.conf" <<EOF
# Written by testenv.sh (postgres_tls.sh): TCP over TLS only; $TLS_CERT_USER with a client
# certificate only; $TLS_SCRAM_USER with its password (SCRAM-SHA-256).
# TYPE   DATABASE     USER           ADDRESS       METHOD
local    all          all                          trust
hostssl  all          $TLS_CERT_USER  127.0.0.1/32  trust clientcert=verify-full
$(tls_scram_hba_line)
hostssl  all          all            127.0.0.1/32  trust
hostssl  replication  all            127.0.0.1/32  trust
EOF
    printf "\ninclude 'dlb_testenv.conf'\n" | as_owner tee -a -- "$data/postgresql.conf" >/dev/null
    tls_write_conf tls-primary server
}

tls_scram_hba_line() {
    printf 'hostssl  all          %-14s 127.0.0.1/32  scram-sha-256' "$TLS_SCRAM_USER"
}

# tls_scram_user: the SCRAM password user, also in a cluster made before it existed: its
# pg_hba.conf line (before the trust line for all users) on every node, and the role.
tls_scram_user() {
    local node hba
    for node in "${TLS_NODES[@]}"; do
        hba=$(tls_node_data "$node")/pg_hba.conf
        [[ -f $hba ]] || continue
        grep -q "^hostssl .* $TLS_SCRAM_USER " "$hba" && continue
        log "adding the SCRAM user's line to $node's pg_hba.conf"
        mark_changed
        as_owner sed -i "s|^hostssl  all          all |$(tls_scram_hba_line)\n&|" "$hba" ||
            die "cannot edit $hba"
        grep -q "^hostssl .* $TLS_SCRAM_USER " "$hba" || die "no line for all users in $hba"
        if tls_node_running "$node"; then
            tls_query "$node" 'SELECT pg_reload_conf()' >/dev/null || die "cannot reload $node"
        fi
    done
    if [[ $(tls_query tls-primary "SELECT count(*) FROM pg_roles WHERE rolname = '$TLS_SCRAM_USER'") != 1 ]]; then
        log "creating the SCRAM user $TLS_SCRAM_USER on tls-primary"
        mark_changed
        tls_query tls-primary "SET password_encryption = 'scram-sha-256'; CREATE ROLE $TLS_SCRAM_USER LOGIN PASSWORD '$TLS_SCRAM_PASSWORD'" >/dev/null ||
            die_log "$(tls_node_log tls-primary)" "CREATE ROLE $TLS_SCRAM_USER failed"
    fi
}

tls_create_replica() { # NODE CERT
    local node=$1 cert=$2
    log "pg_basebackup $node from tls-primary (over TLS)"
    as_owner rm -rf -- "$TLS_DIR/$node"
    as_owner mkdir -p -- "$(tls_node_sock "$node")"
    as_owner "$PG_BIN/pg_basebackup" -d "host=$HOST port=$TLS_PG_PORT user=$PG_SUPERUSER sslmode=require application_name=dlb-$node" \
        -w -D "$(tls_node_data "$node")" -X stream -R -c fast --no-sync >"$TLS_DIR/$node-basebackup.log" 2>&1 ||
        die_log "$TLS_DIR/$node-basebackup.log" "pg_basebackup for $node failed"
    tls_write_conf "$node" "$cert"
}

# tls_cluster_up: create or start the TLS cluster (idempotent).
tls_cluster_up() {
    local node cert conf
    # A cluster made for other ports (the settings changed since): rebuild it.
    conf=$(tls_node_data tls-primary)/dlb_testenv.conf
    if [[ -f $conf ]] && ! grep -qx "port = $TLS_PG_PORT" "$conf"; then
        log "the TLS cluster was made for other ports: rebuilding it"
        tls_cluster_down
        as_owner rm -rf -- "$TLS_DIR/tls-primary" "$TLS_DIR/tls-replica1" "$TLS_DIR/tls-replica2"
        mark_changed
    fi
    tls_pg_certs
    if ! tls_node_running tls-primary; then
        [[ -f $(tls_node_data tls-primary)/PG_VERSION ]] || tls_create_primary
        tls_pg_start tls-primary
    fi
    wait_until "$TIMEOUT" "tls-primary to answer" "$(tls_node_log tls-primary)" tls_node_answers tls-primary
    if ! tls_db_visible tls-primary; then
        tls_query tls-primary "CREATE DATABASE $DB" >/dev/null || die_log "$(tls_node_log tls-primary)" "CREATE DATABASE $DB (TLS) failed"
        tls_query tls-primary "CREATE ROLE $TLS_CERT_USER LOGIN" >/dev/null || true
    fi
    tls_scram_user
    for node in tls-replica1 tls-replica2; do
        cert=server
        [[ $node == tls-replica2 ]] && cert=other
        if ! tls_node_running "$node"; then
            [[ -f $(tls_node_data "$node")/standby.signal ]] || tls_create_replica "$node" "$cert"
            tls_pg_start "$node"
        fi
    done
    for node in tls-replica1 tls-replica2; do
        wait_until "$TIMEOUT" "$node to be in recovery" "$(tls_node_log "$node")" tls_node_in_recovery "$node"
        wait_until "$TIMEOUT" "$node to stream from tls-primary" "$(tls_node_log "$node")" tls_streaming "$node"
        wait_until "$TIMEOUT" "database $DB on $node" "$(tls_node_log "$node")" tls_db_visible "$node"
    done
}

tls_cluster_down() {
    local node
    for node in tls-replica2 tls-replica1 tls-primary; do
        tls_node_running "$node" || continue
        log "stopping $node"
        as_owner "$PG_BIN/pg_ctl" stop -w -t "$TIMEOUT" -m fast -D "$(tls_node_data "$node")" >/dev/null ||
            as_owner "$PG_BIN/pg_ctl" stop -w -t "$TIMEOUT" -m immediate -D "$(tls_node_data "$node")" >/dev/null || true
    done
}

tls_cluster_env() {
    printf 'export DLB_TEST_TLS_PRIMARY=%s\n' "$(sq "host=$HOST port=$TLS_PG_PORT user=$PG_SUPERUSER dbname=$DB")"
    printf 'export DLB_TEST_TLS_REPLICAS=%s\n' "$(sq "$HOST:$((TLS_PG_PORT + 1)),$HOST:$((TLS_PG_PORT + 2))")"
    printf 'export DLB_TEST_TLS_CA=%s\n' "$(sq "$TLS_DIR/ca.pem")"
    printf 'export DLB_TEST_TLS_WRONG_CA=%s\n' "$(sq "$TLS_DIR/wrong-ca.pem")"
    printf 'export DLB_TEST_TLS_CLIENT_CERT=%s\n' "$(sq "$TLS_DIR/client.pem")"
    printf 'export DLB_TEST_TLS_CLIENT_KEY=%s\n' "$(sq "$TLS_DIR/client.key")"
    printf 'export DLB_TEST_TLS_CERT_USER=%s\n' "$(sq "$TLS_CERT_USER")"
    printf 'export DLB_TEST_TLS_SCRAM_USER=%s\n' "$(sq "$TLS_SCRAM_USER")"
    printf 'export DLB_TEST_TLS_SCRAM_PASSWORD=%s\n' "$(sq "$TLS_SCRAM_PASSWORD")"
    printf 'export DLB_TEST_TLS_SOCKETS=%s\n' "$(sq "$(tls_node_sock tls-primary),$(tls_node_sock tls-replica1),$(tls_node_sock tls-replica2)")"
}

# tls_cluster_status: one line per node; fails when one is down.
tls_cluster_status() {
    local node ok=0
    for node in "${TLS_NODES[@]}"; do
        if [[ -e $MARKER ]] && tls_node_running "$node" && tls_node_answers "$node"; then
            printf '%-12s %s:%-5s up (TLS only)\n' "$node" "$HOST" "$(tls_node_port "$node")"
        else
            printf '%-12s %s:%-5s DOWN\n' "$node" "$HOST" "$(tls_node_port "$node")"
            ok=1
        fi
    done
    return "$ok"
}
