# frozen_string_literal: true

require "json"

module DLB
  # A Ruby thread that takes a balancer's host events (+lb_next_event+, polled with a short
  # timeout and the GVL released while it waits) and closes the pool of every host dlb
  # drained, removed or found re-pointed at another server. No callback from dlb's threads:
  # everything runs on this Ruby thread.
  #
  # It holds the C handle, not the balancer, so that an unreferenced balancer can still be
  # collected: the balancer's finalizer asks the thread to stop, and the handle is freed
  # once the thread (its last user) has ended.
  # @api private
  class EventPump
    # How long one lb_next_event call waits, in ms: the most a stop waits for the thread.
    POLL_MS = 100
    # Events after which a host's pool is closed ("removed" hosts keep theirs until dlb drains
    # them: in-flight work may finish).
    CLOSING = %w[drained identity_changed].freeze

    # @return [Array<Hash>] the last events seen (at most 64), newest last, for status/tests
    attr_reader :recent

    # @param handle [FFI::AutoPointer] the balancer's C handle
    # @param pools [Pools]
    # @param listeners [Array<#call>] also called with each event (the balancer's list, shared:
    #   listeners added later are called too), e.g. the ActiveRecord integration's pools
    def initialize(handle, pools, listeners = [])
      @handle = handle
      @pools = pools
      @listeners = listeners
      @stop = false
      @pid = Process.pid
      @recent = []
      @thread = Thread.new { run }
      @thread.name = "dlb-events"
      @thread.report_on_exception = false
    end

    # Stops the thread and waits for it (at most one poll). Idempotent.
    def stop
      signal_stop
      @thread.join unless Thread.current == @thread
      nil
    end

    # Asks the thread to stop without waiting (safe in a finalizer). Touches the handle only
    # while the thread runs (it keeps the handle alive until then), and only in the process
    # that started it: once stopped, the handle may be freed.
    def signal_stop
      return nil if @stop || Process.pid != @pid

      @stop = true
      Native.lb_wake_event_waiters(@handle)
      nil
    end

    # A finalizer for the balancer: stops the pump, references neither.
    def self.finalizer(pump)
      proc { pump.signal_stop }
    end

    private

    def run
      cap = 1024
      buf = FFI::MemoryPointer.new(:char, cap)
      len = FFI::MemoryPointer.new(:size_t)
      until @stop
        status = Native.lb_next_event(@handle, POLL_MS, buf, cap, len)
        if status == Status::ERR_BUFFER_TOO_SMALL
          cap = len.read(:size_t) + 1
          buf = FFI::MemoryPointer.new(:char, cap)
          next
        end
        break unless status == Status::OK

        n = len.read(:size_t)
        handle_event(JSON.parse(buf.read_string(n))) if n.positive?
      end
    rescue StandardError => e
      warn "dlb: the host event thread stopped: #{e.class}: #{e.message}"
    ensure
      @stop = true # from now on signal_stop leaves the handle alone
    end

    def handle_event(event)
      @recent << event
      @recent.shift while @recent.size > 64
      @pools.close_host(event["host_id"]) if CLOSING.include?(event["event"])
      @listeners.each do |listener|
        listener.call(event)
      rescue StandardError => e
        warn "dlb: a host event listener failed: #{e.class}: #{e.message}"
      end
    end
  end
end
