# frozen_string_literal: true

# dlb from Ruby, the way GitLab's container registry uses database load balancing: a push
# writes a tag on the primary and records the WAL position for the repository; the next
# "list tags" of that repository reads from a replica that has replayed the push (or from
# the primary while none has), never from a stale one. Other reads spread round-robin.
#
# Run against the test cluster, from the repository root:
#
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   cargo build --release --lib
#   ruby -Ibindings/ruby/lib examples/ruby/registry.rb [REPOSITORY_PATH]
#
# Configuration from DLB_TEST_PRIMARY (libpq key=value DSN) and DLB_TEST_REPLICAS
# (host:port,host:port). Needs the ffi and pg gems.

begin
  require "dlb"
rescue LoadError => e
  raise unless e.path == "dlb"

  # Not installed as a gem: use the binding from this repository.
  $LOAD_PATH.unshift(File.expand_path("../../bindings/ruby/lib", __dir__))
  require "dlb"
end
require "pg"
require "securerandom"

# A tiny tag store over dlb: writes on the primary, reads routed by dlb.
class Registry
  def initialize(balancer)
    @lb = balancer
    @conns = {} # one connection per DSN handed out (a real app uses a pool per DSN)
  end

  # Creates the table when missing (the same table as the Go and Rust examples).
  def migrate
    primary.exec("SET client_min_messages = warning")
    primary.exec("CREATE TABLE IF NOT EXISTS dlb_example_tags (repo text NOT NULL, name text NOT NULL, " \
                 "created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (repo, name))")
  end

  # A push: writes the tag on the primary, then records the WAL position for the repository
  # (one round trip to the primary). Returns the LSN: a causal token the caller could also
  # hand to another process (a background job) for DLB::Balancer#pick_replica_min_lsn.
  def push_tag(repo, name)
    primary.exec_params("INSERT INTO dlb_example_tags (repo, name) VALUES ($1, $2) " \
                        "ON CONFLICT DO NOTHING", [repo, name])
    @lb.record_lsn(sticky_key(repo))
  end

  # Lists a repository's tags from a host that has every write recorded for it. Returns the
  # tags and the route that served them.
  def list_tags(repo)
    route = @lb.pick_replica(sticky_key(repo))
    tags = read(route) do |conn|
      conn.exec_params("SELECT name FROM dlb_example_tags WHERE repo = $1 ORDER BY name", [repo]).column_values(0)
    end
    [tags, route]
  end

  # A read with no freshness requirement: plain round-robin.
  def count_repositories
    route = @lb.pick_replica
    n = read(route) { |conn| conn.exec("SELECT count(DISTINCT repo) FROM dlb_example_tags").getvalue(0, 0).to_i }
    [n, route]
  end

  def close
    @conns.each_value(&:close)
    @conns.clear
  end

  private

  def sticky_key(repo)
    "repo:#{repo}"
  end

  def primary
    conn_for(@lb.primary_dsn)
  end

  # Runs the block on a connection to the route's host. On a connection error, tells dlb
  # (the replica leaves the rotation until it answers again) and lets the caller retry.
  def read(route)
    yield conn_for(route.dsn)
  rescue PG::ConnectionBad, PG::UnableToSend
    @conns.delete(route.dsn)&.close
    @lb.report_failure(route.dsn)
    raise
  end

  def conn_for(dsn)
    @conns[dsn] ||= PG.connect(dsn)
  end
end

def env!(name)
  value = ENV.fetch(name, "")
  abort "#{name} is not set: bash scripts/testenv.sh up && eval \"$(bash scripts/testenv.sh env)\"" if value.empty?
  value
end

config = {
  primary: env!("DLB_TEST_PRIMARY"),
  replicas: { hosts: env!("DLB_TEST_REPLICAS").split(",") },
  replica_check_interval_ms: 200
}
repo = ARGV.fetch(0, "gitlab-org/container-registry")

DLB::Balancer.open(config) do |lb|
  puts "dlb #{DLB::VERSION} (libdlb #{DLB.library_version})"
  registry = Registry.new(lb)
  begin
    registry.migrate
    # Replicas become eligible once the monitor has checked them (a fraction of a second
    # after start-up); until then reads go to the primary with reason no_healthy_replica.
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    until lb.status["healthy_replicas"].positive? || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.05
    end

    tag = "v#{Time.now.utc.strftime('%Y%m%d%H%M%S')}-#{SecureRandom.hex(3)}"
    lsn = registry.push_tag(repo, tag)
    puts "pushed #{repo}:#{tag} on the primary; recorded LSN #{lsn} for repo:#{repo}"

    tags, route = registry.list_tags(repo)
    puts "list tags of #{repo} via #{route}: #{tags.size} tag(s)"
    abort "the tag just pushed is missing: stale read via #{route}" unless tags.include?(tag)
    puts "  ... #{tag} is there (read-your-writes)"

    3.times do
      n, route = registry.count_repositories
      puts "count repositories via #{route}: #{n}"
    end

    route = lb.pick_replica_min_lsn(lsn)
    puts "a job carrying the token #{lsn} would read via #{route}"
    healthy = lb.status.fetch("replicas").map { |r| "#{r['addr']} #{r['state']}" }.join(", ")
    puts "replicas: #{healthy}"
  ensure
    registry.close
  end
end
