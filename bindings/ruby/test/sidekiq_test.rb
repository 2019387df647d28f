# frozen_string_literal: true

require_relative "test_helper"
require "sidekiq"
require "sidekiq/testing"

# DLB::Sidekiq: the enqueuing request's LSN travels in the job; the job, run with another
# balancer (another process's embedded store), reads its enqueuer's write. Sidekiq's
# testing mode: no server, no Redis.
class SidekiqTest < Minitest::Test
  include DLBTest

  TABLE = "dlb_ruby_sidekiq_tests"

  # What the jobs saw: [id, rows found, port read from].
  SEEN = Queue.new

  # Reads the row its enqueuer wrote, through the job process's balancer.
  class ReadJob
    include ::Sidekiq::Worker

    class << self
      attr_accessor :balancer
    end

    def perform(id)
      SEEN << ReadJob.balancer.with_replica do |conn|
        [id, conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples,
         conn.exec("SELECT inet_server_port()").getvalue(0, 0)]
      end
    end
  end

  # The same, putting itself back while no replica has caught up.
  class DelayedReadJob < ReadJob
    sidekiq_options dlb: :delayed
  end

  # Writes a row, then reads it by key, in the same job.
  class WriteReadJob < ReadJob
    def perform(key)
      lb = ReadJob.balancer
      id = lb.with_primary { |conn| conn.exec("INSERT INTO #{TABLE} DEFAULT VALUES RETURNING id").getvalue(0, 0) }
      SEEN << lb.with_replica(key) do |conn|
        [id, conn.exec_params("SELECT 1 FROM #{TABLE} WHERE id = $1", [id]).ntuples,
         conn.exec("SELECT inet_server_port()").getvalue(0, 0)]
      end
    end
  end

  # A job with a misspelt mode.
  class BadOptionJob < ReadJob
    sidekiq_options dlb: :eventually
  end

  def setup
    ::Sidekiq::Testing.fake!
    @web = DLB::Balancer.new(config)  # the request's process
    @jobs = DLB::Balancer.new(config) # the job's process: its own embedded store
    [@web, @jobs].each { |lb| wait_healthy(lb) }
    ReadJob.balancer = @jobs
    ::Sidekiq.client_middleware { |chain| chain.add DLB::Sidekiq::Client, balancer: @web }
    ::Sidekiq::Testing.server_middleware { |chain| chain.add DLB::Sidekiq::Server, balancer: @jobs }
    @web.with_primary do |conn|
      conn.exec("SET client_min_messages = warning")
      conn.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY)")
    end
    SEEN.clear
  end

  def teardown
    resume_replicas
    ::Sidekiq.client_middleware(&:clear)
    ::Sidekiq::Testing.server_middleware(&:clear)
    ::Sidekiq::Worker.clear_all
    @web&.close
    @jobs&.close
  end

  # Inside a request: write, enqueue. Returns the row's id.
  def write_and_enqueue(job_class)
    DLB::Context.with(DLB::Context.new(keys: ["repo:jobs"])) do
      id = @web.with_primary { |conn| conn.exec("INSERT INTO #{TABLE} DEFAULT VALUES RETURNING id").getvalue(0, 0).to_i }
      job_class.perform_async(id)
      id
    end
  end

  def test_the_token_travels_with_the_job
    REPLICAS.each_index { |i| pause_replica_replay(i + 1) }
    id = write_and_enqueue(ReadJob)
    job = ReadJob.jobs.last
    written = @web.with_primary { |conn| conn.exec("SELECT pg_current_wal_lsn()").getvalue(0, 0) }
    assert job["dlb_lsn"], "no token in the job"
    assert_operator lsn_to_i(job["dlb_lsn"]), :<=, lsn_to_i(written)
    ReadJob.drain
    seen_id, rows, port = SEEN.pop
    assert_equal id, seen_id
    assert_equal 1, rows, "the job did not see its enqueuer's write (read on port #{port})"
    assert_equal port_of(PRIMARY), port, "no replica has the write: the job must read the primary (sticky)"

    # Once a replica replays it, the job reads there.
    resume_replicas
    write_and_enqueue(ReadJob)
    wait_until("a replica to serve the job's token") { @jobs.pick_replica_min_lsn(ReadJob.jobs.last["dlb_lsn"]).replica? }
    ReadJob.drain
    _, rows, port = SEEN.pop
    assert_equal 1, rows
    refute_equal port_of(PRIMARY), port
  end

  def test_delayed_jobs_wait_for_the_replicas_once
    REPLICAS.each_index { |i| pause_replica_replay(i + 1) }
    write_and_enqueue(DelayedReadJob)
    job = DelayedReadJob.jobs.first
    DelayedReadJob.perform_one
    assert SEEN.empty?, "a :delayed job ran although no replica had caught up"
    again = DelayedReadJob.jobs.last
    assert_equal job["jid"], again["jid"]
    assert again["dlb_delayed"]
    assert_operator again["at"], :>, Time.now.to_f
    # Its second run reads from the primary if the replicas are still behind.
    DelayedReadJob.perform_one
    _, rows, port = SEEN.pop
    assert_equal 1, rows
    assert_equal port_of(PRIMARY), port
  end

  # A job that writes, then reads by key: the read goes to the primary (no replica has
  # replayed the write). Old code: it went to a replica, stale.
  def test_a_job_reads_its_own_write
    REPLICAS.each_index { |i| pause_replica_replay(i + 1) }
    10.times { |i| WriteReadJob.perform_async("job:own:#{i}:#{rand(1 << 30)}") }
    WriteReadJob.drain
    seen = Array.new(10) { SEEN.pop }
    stale = seen.count { |_, rows, _| rows.zero? }
    assert_equal 0, stale, "#{stale} of 10 jobs did not read their own write (ports #{seen.map(&:last).tally})"
  end

  def test_no_request_context_no_token
    DelayedReadJob.perform_async(1)
    refute DelayedReadJob.jobs.last.key?("dlb_lsn")
    DelayedReadJob.drain
    assert_equal 1, SEEN.pop[0]
  end

  def test_a_bad_option_is_named
    err = assert_raises(ArgumentError) { BadOptionJob.perform_async(1) }
    assert_includes err.message, "dlb"
    assert_includes err.message, ":eventually"
  end
end
