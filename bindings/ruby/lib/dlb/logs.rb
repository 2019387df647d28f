# frozen_string_literal: true

require "json"
require "logger"

# dlb's log records in Ruby: {DLB::Logs}, {DLB.logger=}.
module DLB
  # dlb's log records into a Ruby +Logger+ (+Rails.logger+): a Ruby thread drains the
  # library's log queue (+lb_next_log+, the GVL released while it waits), so no callback ever
  # comes from one of dlb's own threads and closing a balancer (which joins its monitor
  # thread) never waits for Ruby. Records never contain a password.
  module Logs
    # How long one lb_next_log call waits, in ms: the most turning logging off waits.
    POLL_MS = 100
    # dlb's levels (LB_LOG_ERROR = 1 .. LB_LOG_TRACE = 5) as Logger severities.
    SEVERITY = { 1 => Logger::ERROR, 2 => Logger::WARN, 3 => Logger::INFO, 4 => Logger::DEBUG, 5 => Logger::DEBUG }.freeze

    @lock = Mutex.new
    @logger = nil
    @thread = nil

    class << self
      # @return [Logger, nil] the logger dlb's records go to
      attr_reader :logger

      # Sends dlb's records to +logger+ (nil: stops). Records less severe than the logger's
      # level are not even queued. Starts or stops the draining thread; waits for the old
      # one to end (at most {POLL_MS}).
      # @param logger [Logger, nil] anything with +level+ and +add(severity, message, progname)+
      # @raise [LoggerUnavailableError] another Rust logger owns this process's log facade
      def logger=(logger)
        @lock.synchronize do
          stop_thread
          @logger = logger
          next Native.lb_log_queue_enable(0) if logger.nil?

          status = Native.lb_log_queue_enable(level_filter(logger.level))
          raise Error.from_status(status) unless status == Status::OK

          @thread = start_thread(logger)
        end
      end

      # In a forked child: the draining thread did not survive the fork; starts it again.
      # @api private
      def after_fork
        @lock = Mutex.new
        @thread = nil
        self.logger = @logger if @logger
      end

      private

      # The lb_log_queue_enable filter for a Logger level (DEBUG and below: debug records).
      def level_filter(level)
        { Logger::DEBUG => 4, Logger::INFO => 3, Logger::WARN => 2 }.fetch(level) { level < Logger::DEBUG ? 4 : 1 }
      end

      def stop_thread
        return unless @thread

        @stopping = true
        Native.lb_wake_log_waiters
        @thread.join
        @thread = nil
      end

      def start_thread(logger)
        @stopping = false
        thread = Thread.new { drain(logger) }
        thread.name = "dlb-logs"
        thread.report_on_exception = false
        thread
      end

      def drain(logger)
        cap = 1024
        buf = FFI::MemoryPointer.new(:char, cap)
        len = FFI::MemoryPointer.new(:size_t)
        until @stopping
          status = Native.lb_next_log(POLL_MS, buf, cap, len)
          if status == Status::ERR_BUFFER_TOO_SMALL
            cap = len.read(:size_t) + 1
            buf = FFI::MemoryPointer.new(:char, cap)
            next
          end
          n = len.read(:size_t)
          deliver(logger, JSON.parse(buf.read_string(n).force_encoding(Encoding::UTF_8))) if status == Status::OK && n.positive?
        end
      rescue StandardError => e
        warn "dlb: the log thread stopped: #{e.class}: #{e.message}"
      end

      def deliver(logger, record)
        message = record["message"].to_s
        message = "#{message} (#{record['dropped']} earlier records dropped)" if record["dropped"].to_i.positive?
        logger.add(SEVERITY.fetch(record["level_num"], Logger::INFO), message, record["target"] || "dlb")
      end
    end
  end

  # Sends dlb's log records to +logger+ (+DLB.logger = Rails.logger+); nil stops. See {Logs}.
  def self.logger=(logger)
    Logs.logger = logger
  end

  # @return [Logger, nil]
  def self.logger
    Logs.logger
  end
end
