# shellcheck shell=bash
# Part of scripts/testenv.sh, which sources it (not a command of its own): logging and
# failure reports, bounded waits, running things as the owner of the environment, the lock
# of mutating commands and the base directory.
#
# Uses the settings testenv.sh defines before sourcing it: BASE, HOST, TIMEOUT, RUN_AS,
# MARKER, LOCK_FILE and SCRIPT_PATH.

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
# Every file descriptor but 0-2 is closed for CMD (see inside).
as_owner() {
    (
        # What starts here may be a server that outlives this script: it must not keep the
        # caller's open files. A lock the caller holds (flock(1) hands its lock file to the
        # command as fd 3; testenv.sh's own is fd 9) would stay held for as long as the
        # server runs, and every later test waiting for it would hang.
        for fd in /proc/"$BASHPID"/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-"; fi
        done
        if ((EUID == 0)); then
            cd / && exec runuser -u "$RUN_AS" -- "$@"
        else
            exec "$@"
        fi
    )
}

# mark_changed: `up` had to start or create something (it says so at the end).
# shellcheck disable=SC2034 # CHANGED is initialised and read by testenv.sh
mark_changed() { CHANGED=1; }

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

# port_in_use PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# wait_until SECONDS WHAT LOGFILE CMD...: bounded polling until CMD succeeds.
wait_until() {
    local limit=$1 what=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die_log "$logfile" "timed out after ${limit}s waiting for $what"
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

# sq STRING: single-quote STRING for the shell.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

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
