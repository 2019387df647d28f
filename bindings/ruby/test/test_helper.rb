# frozen_string_literal: true

# Shared setup of the dlb Ruby tests: the real test cluster (scripts/testenv.sh) and its
# settings from the environment, the cluster lock, and bounded polling helpers.
#
# Run through bindings/ruby/test.sh, or by hand from the repository root:
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   ruby -Ibindings/ruby/lib -Ibindings/ruby/test bindings/ruby/test/routing_test.rb

require "minitest/autorun"
require "json"
require "pg"
require "dlb"

module DLBTest
  ROOT = File.expand_path("../../..", __dir__)
  LOCK_FILE = ENV.fetch("DLB_TESTS_LOCK", "/tmp/dlb-tests.lock")
  PASSWORD = "secretpw"

  def self.env(name)
    value = ENV.fetch(name, "")
    if value.empty?
      abort "#{name} is not set; start the test cluster and export its settings:\n  " \
            "bash scripts/testenv.sh up && eval \"$(bash scripts/testenv.sh env)\""
    end
    value
  end

  PRIMARY = env("DLB_TEST_PRIMARY")
  REPLICAS = env("DLB_TEST_REPLICAS").split(",").map(&:strip).freeze
  SCRIPT = ENV.fetch("DLB_TESTENV_SCRIPT") { File.join(ROOT, "scripts", "testenv.sh") }

  module_function

  # The test cluster's configuration: the primary's DSN with a password (trust auth ignores
  # it: it is there to check that it never shows in metrics, status or errors), both
  # replicas, fast checks and generous probe timeouts (GC.stress runs are slow).
  def config(extra = {})
    {
      primary: "#{PRIMARY} password=#{PASSWORD}",
      replicas: { hosts: REPLICAS },
      replica_check_interval_ms: 100,
      probe_timeout_ms: 2000
    }.merge(extra)
  end

  # Serializes with the other suites (Rust, C, Go) that pause or stop replicas. test.sh runs
  # us under `flock /tmp/dlb-tests.lock` and says so with DLB_TESTS_LOCKED=1 (taking the lock
  # again here would wait for ourselves); run by hand, we take it.
  def lock_cluster
    return if ENV["DLB_TESTS_LOCKED"] == "1"

    @lock = File.open(LOCK_FILE, File::RDWR | File::CREAT, 0o666)
    warn "waiting for the cluster lock #{LOCK_FILE} (other tests running?)" unless @lock.flock(File::LOCK_EX | File::LOCK_NB)
    @lock.flock(File::LOCK_EX)
  end

  # scripts/testenv.sh ARGS..., quiet unless it fails. With every file descriptor but 0-2
  # closed: under test.sh, flock(1) hands the cluster lock to us as fd 3, and a replica that
  # start-replica starts would otherwise keep it (and the lock) for as long as it runs.
  def testenv(*args)
    out = IO.popen(["bash", SCRIPT, *args], err: %i[child out], close_others: true, &:read)
    raise "testenv.sh #{args.join(' ')} failed:\n#{out}" unless $?.success?

    out
  end

  # Every replica running and replaying (what every suite leaves behind).
  def restore_cluster
    REPLICAS.each_index do |i|
      testenv("start-replica", (i + 1).to_s)
      testenv("resume-replica", (i + 1).to_s)
    end
  end

  # Replica +n+ (1-based) as [host, port].
  def replica_addr(n)
    host, _, port = REPLICAS.fetch(n - 1).rpartition(":")
    [host, port]
  end

  def replica_port(n)
    replica_addr(n)[1]
  end

  # A direct DSN to replica +n+: the primary's with host and port replaced.
  def replica_dsn(n)
    host, port = replica_addr(n)
    rest = PRIMARY.split.reject { |kv| kv.start_with?("host=", "port=") }
    (["host=#{host}", "port=#{port}"] + rest).join(" ")
  end

  # The port= of a key=value DSN.
  def port_of(dsn)
    dsn[/(?:\A|\s)port=(\d+)/, 1]
  end

  def now
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # Polls the block until it returns a truthy value (returned) or +timeout+ seconds pass
  # (then fails, saying +what+ and the block's last value).
  def wait_until(what, timeout: 30, interval: 0.02)
    deadline = now + timeout
    loop do
      value = yield
      return value if value
      raise Minitest::Assertion, "timed out after #{timeout}s waiting for #{what}" if now > deadline

      sleep interval
    end
  end

  # Waits until the balancer reports +n+ healthy replicas.
  def wait_healthy(lb, n = REPLICAS.size, timeout: 30)
    last = nil
    wait_until("#{n} healthy replicas", timeout: timeout) do
      last = lb.status
      last["healthy_replicas"] >= n
    end
  rescue Minitest::Assertion
    raise Minitest::Assertion, "replicas not healthy after #{timeout}s; status: #{JSON.generate(last)}"
  end

  # The directory dlb was loaded from (the installed gem's lib/, or bindings/ruby/lib), for
  # the worker processes the tests start: they load the same dlb.
  def dlb_lib_dir
    File.dirname($LOADED_FEATURES.find { |f| f.end_with?("/dlb.rb") })
  end

  # Pauses WAL replay on replica +n+ and waits until it is paused: from then on it replays
  # nothing, so every later write is past it. The caller resumes it (resume_replicas).
  # @return [String] the LSN it stopped at
  def pause_replica_replay(n)
    testenv("pause-replica", n.to_s)
    conn = PG.connect(replica_dsn(n))
    begin
      wait_until("replica #{n} to pause replay") do
        conn.exec("SELECT pg_get_wal_replay_pause_state()").getvalue(0, 0) == "paused"
      end
      conn.exec("SELECT pg_last_wal_replay_lsn()").getvalue(0, 0)
    ensure
      conn.close
    end
  end

  def resume_replicas
    REPLICAS.each_index { |i| testenv("resume-replica", (i + 1).to_s) }
  end

  # Parses "X/Y" into an Integer.
  def lsn_to_i(lsn)
    hi, lo = lsn.split("/", 2)
    (Integer(hi, 16) << 32) | Integer(lo, 16)
  end
end

DLBTest.lock_cluster
DLBTest.restore_cluster
