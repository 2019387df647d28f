#!/usr/bin/env bash
# Install the prerequisites of the dlb test environment on a Debian machine.
#
# Only packages whose command/file is missing are installed; when everything
# is already present nothing is touched (no apt-get update either).
#
# To add a prerequisite, add one line to the "Prerequisites" section below:
#   need      COMMAND   PACKAGE   -- COMMAND must be on PATH
#   need_glob PATTERN   PACKAGE   -- some file must match the glob PATTERN
#   need_ruby LIBRARY   PACKAGE   -- ruby must be able to require LIBRARY
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

missing_pkgs=()
missing_what=()

add_missing() { # PACKAGE WHAT
    local p
    missing_what+=("$2")
    for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
        [[ $p == "$1" ]] && return 0
    done
    missing_pkgs+=("$1")
}

# need COMMAND PACKAGE: COMMAND must be found on PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || add_missing "$2" "command '$1'"
}

# need_glob PATTERN PACKAGE: at least one existing file must match PATTERN.
need_glob() {
    local f
    for f in $1; do
        [[ -e $f ]] && return 0
    done
    add_missing "$2" "file '$1'"
}

# need_ruby LIBRARY PACKAGE: `ruby -e 'require "LIBRARY"'` must succeed.
need_ruby() {
    if ! { command -v ruby >/dev/null 2>&1 && ruby -e "require '$1'" >/dev/null 2>&1; }; then
        add_missing "$2" "ruby library '$1'"
    fi
}

check_all() {
    missing_pkgs=()
    missing_what=()

    # ---- Prerequisites (one line each) -------------------------------------
    need_glob '/usr/lib/postgresql/*/bin/pg_ctl'        postgresql
    need_glob '/usr/lib/postgresql/*/bin/pg_basebackup' postgresql
    need_glob '/usr/lib/postgresql/*/bin/psql'          postgresql-client
    need      redis-server                              redis-server
    need      redis-cli                                 redis-tools
    need      openssl                                   openssl
    need      gcc                                       gcc
    need      make                                      make
    need      valgrind                                  valgrind
    need      pkg-config                                pkg-config
    need      runuser                                   util-linux
    need      flock                                     util-linux
    need_glob '/usr/sbin/dnsmasq'                       dnsmasq-base
    # The black-hole test drops a proxy port's packets on loopback (skipped when not root).
    need_glob '/usr/sbin/iptables'                      iptables
    # Lint of every shell script (a step of scripts/test.sh).
    need      shellcheck                                shellcheck
    # Bindings: Go (cgo, standard library only) and Ruby (ffi gem; pg gem and minitest for tests).
    need      go                                        golang-go
    need_glob '/usr/share/gocode/src/github.com/lib/pq/conn.go' golang-github-lib-pq-dev
    # Go: dlbprom (client_golang) and dlbslog (x/exp/slog; Go 1.19 has no log/slog).
    need_glob '/usr/share/gocode/src/github.com/prometheus/client_golang/prometheus/collector.go' golang-github-prometheus-client-golang-dev
    need_glob '/usr/share/gocode/src/golang.org/x/exp/slog/logger.go' golang-golang-x-exp-dev
    need      ruby                                      ruby
    need_ruby ffi                                       ruby-ffi
    need_ruby pg                                        ruby-pg
    need_ruby minitest                                  ruby-minitest
    # Operators' tools: promtool checks the metrics text and the README's alert rules; tmux
    # drives `dlb watch` in its terminal test.
    need      promtool                                  prometheus
    need      tmux                                      tmux
    # Ruby gem kit (bindings/ruby): pools, Rack and Sidekiq middleware, duration types, the
    # gem's Rakefile and lint.
    need_ruby connection_pool                           ruby-connection-pool
    need_ruby rack                                      ruby-rack
    need_ruby rack/test                                 ruby-rack-test
    need_ruby sidekiq                                   ruby-sidekiq
    need_ruby active_support                            ruby-activesupport
    # ActiveRecord integration (DLB::ActiveRecord, its tests and example app).
    need_ruby active_record                             ruby-activerecord
    need      rake                                      rake
    need      rubocop                                   rubocop
    # -------------------------------------------------------------------------
}

check_all

if ((${#missing_pkgs[@]} == 0)); then
    echo "bootstrap: all prerequisites are present"
    exit 0
fi

echo "bootstrap: missing:"
printf '  - %s\n' "${missing_what[@]}"

if ((EUID != 0)); then
    echo "bootstrap: not running as root; install the missing packages with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: apt-get not found; this script supports Debian/Ubuntu only." >&2
    echo "bootstrap: please install the equivalents of: ${missing_pkgs[*]}" >&2
    exit 1
fi

echo "bootstrap: installing: ${missing_pkgs[*]}"
apt-get update
apt-get install -y --no-install-recommends "${missing_pkgs[@]}"

check_all
if ((${#missing_pkgs[@]} != 0)); then
    echo "bootstrap: still missing after installation:" >&2
    printf '  - %s\n' "${missing_what[@]}" >&2
    exit 1
fi
echo "bootstrap: all prerequisites are present"
