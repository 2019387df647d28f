# frozen_string_literal: true

require_relative "test_helper"
require "logger"
require "stringio"

# dlb's log records reach a Ruby Logger through the log queue, drained by a Ruby thread;
# closing a balancer while that thread waits does not deadlock; no password is logged.
class LogsTest < Minitest::Test
  include DLBTest

  def teardown
    DLB.logger = nil
  end

  def log_threads
    Thread.list.count { |t| t.name == "dlb-logs" && t.alive? }
  end

  def test_records_reach_the_logger_and_close_does_not_hang
    io = StringIO.new
    DLB.logger = Logger.new(io, level: Logger::INFO)
    assert_equal 1, log_threads
    # A replica nobody listens on: dlb logs that it is out of the rotation.
    lb = DLB::Balancer.new(config(replicas: { hosts: [REPLICAS.first, "127.0.0.1:1"] }))
    wait_until("a log record about 127.0.0.1:1", timeout: 60) { io.string.include?("127.0.0.1:1") }
    refute_includes io.string, PASSWORD, "a password reached the log"
    assert_match(/WARN|ERROR|INFO/, io.string)

    # close joins dlb's monitor thread, which logs: with the log thread waiting in
    # lb_next_log, neither may wait for the other (the join below is a hang detector).
    closer = Thread.new { lb.close }
    refute_nil closer.join(120), "close did not return: deadlock with the log thread"

    DLB.logger = nil
    assert_equal 0, log_threads, "the log thread did not stop"
  end
end
