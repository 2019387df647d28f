# frozen_string_literal: true

require_relative "test_helper"

# The fork guard: a balancer inherited across fork (Puma's preload_app!) raises ForkedError,
# naming DLB.after_fork, until the child calls it; then it works, and the parent's pooled
# connections were neither used nor closed by the child.
class ForkTest < Minitest::Test
  include DLBTest

  def setup
    @lb = DLB::Balancer.new(config).configure_pools(size: 1)
    wait_healthy(@lb)
  end

  def teardown
    @lb&.close
  end

  # Runs the block in a forked child and returns what it returned (through a pipe, as
  # JSON). The child ends with exit! (no at_exit handlers, no finalizers of the parent's
  # objects).
  def in_child
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      result = begin
        yield
      rescue Exception => e # rubocop:disable Lint/RescueException -- reported to the parent
        { "unexpected" => "#{e.class}: #{e.message}" }
      end
      writer.write(JSON.generate(result))
      writer.close
      exit!(0)
    end
    writer.close
    out = reader.read
    _, status = Process.wait2(pid)
    assert_predicate status, :success?, "child: #{status.inspect}"
    JSON.parse(out)
  ensure
    reader&.close
  end

  def backend_pid
    @lb.with_primary(&:backend_pid)
  end

  def test_inherited_balancer_raises_until_after_fork
    parent_backend = backend_pid
    result = in_child do
      errors = %i[pick_replica primary_dsn status with_replica].map do |call|
        @lb.public_send(call) { |conn| conn }
        nil
      rescue DLB::ForkedError => e
        e.message
      end
      forked = @lb.forked?
      recreated = DLB.after_fork
      route = @lb.pick_replica
      child_backend = @lb.with_primary(&:backend_pid)
      value = @lb.with_replica { |conn| conn.exec("SELECT 1").getvalue(0, 0) }
      { "errors" => errors, "forked" => forked, "recreated" => recreated, "route" => route.role.to_s,
        "child_backend" => child_backend, "value" => value, "again" => DLB.after_fork }
    end
    refute result.key?("unexpected"), result["unexpected"]
    assert result["forked"]
    result["errors"].each do |message|
      refute_nil message, "a call on the inherited balancer did not raise ForkedError"
      assert_includes message, "DLB.after_fork"
    end
    assert_operator result["recreated"], :>=, 1
    assert_equal "replica", result["route"]
    assert_equal "1", result["value"]
    refute_equal parent_backend, result["child_backend"], "the child used the parent's connection"
    assert_equal 0, result["again"], "after_fork twice re-creates nothing the second time"
    # The parent's balancer and its pooled connection (size 1: the same one) still work.
    refute @lb.forked?
    assert_equal parent_backend, backend_pid, "the child closed the parent's pooled connection"
  end
end
