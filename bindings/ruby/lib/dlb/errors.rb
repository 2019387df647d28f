# frozen_string_literal: true

module DLB
  # Included in the errors a retry may cure (the cluster can change state):
  # +rescue DLB::Retryable+ catches exactly those. Matches +lb_status_is_retryable()+.
  module Retryable
  end

  # Base class of every error raised by dlb. Messages come from the C library and never
  # contain a password.
  class Error < StandardError
    # @return [Integer, nil] the C status code (one of the {Status} constants, +LB_ERR_*+),
    #   nil for errors raised by the Ruby binding itself ({ClosedError})
    attr_reader :code

    # @param message [String]
    # @param code [Integer, nil]
    def initialize(message = nil, code: nil)
      super(message)
      @code = code
    end

    # @return [Boolean] true when a retry may succeed (see {Retryable})
    def retryable?
      is_a?(Retryable)
    end

    # The exception for a failed C call, with the calling thread's last error message.
    # Call it right after the failing call, in the same thread and before any other +lb_*+
    # call (see {Native.last_error_message}).
    # @api private
    # @param code [Integer] the +lb_status+
    # @return [Error] an instance of the class for +code+ ({ERRORS_BY_CODE}); {Error} or
    #   {RetryableError} for a code newer than this binding
    def self.from_status(code)
      message = Native.last_error_message
      message = Native.lb_status_str(code) if message.empty?
      klass = ERRORS_BY_CODE.fetch(code) { Native.lb_status_is_retryable(code) ? RetryableError : Error }
      klass.new(message, code: code)
    end
  end

  # The balancer was closed ({Balancer#close}); no C call was made.
  class ClosedError < Error; end

  # +LB_ERR_INVALID_ARGUMENT+: an argument is missing, not valid UTF-8 (or holds a NUL byte),
  # or out of range. The message names the argument.
  class InvalidArgumentError < Error; end

  # +LB_ERR_INVALID_CONFIG+: the configuration JSON is malformed or a field is invalid or
  # unknown. The message names the field as a JSON path (+pool.max_size+).
  class InvalidConfigError < Error; end

  # +LB_ERR_BUFFER_TOO_SMALL+: handled inside the binding (buffers grow); raised only if a
  # text kept growing faster than the buffer.
  class BufferTooSmallError < Error; end

  # +LB_ERR_PRIMARY_UNAVAILABLE+: the primary cannot be reached (connection refused, timed
  # out, pool exhausted).
  class PrimaryUnavailableError < Error
    include Retryable
  end

  # +LB_ERR_NO_CAUGHT_UP_REPLICA+: no replica has replayed the required LSN and the
  # configuration says +"no_caught_up_replica": "error"+ (retry, or read from the primary).
  class NoCaughtUpReplicaError < Error
    include Retryable
  end

  # +LB_ERR_STORE+: the LSN store failed.
  #
  # From {Balancer#record_lsn} it comes after the primary's LSN was read: the write happened
  # at that LSN, only recording it failed. {#lsn} gives it: carry it as a causal token
  # ({Balancer#pick_replica_min_lsn}) or retry with {Balancer#record_lsn_value}.
  class StoreError < Error
    include Retryable

    # @return [String, nil] the LSN (+"X/Y"+) that was read but could not be stored: carry it
    #   as a causal token. nil for the other store failures.
    attr_reader :lsn

    # @param message [String]
    # @param code [Integer, nil]
    # @param lsn [String, nil]
    def initialize(message = nil, code: nil, lsn: nil)
      super(message, code: code)
      @lsn = lsn
    end
  end

  # +LB_ERR_PANIC+: a bug in dlb, caught at the C boundary. The balancer is still usable.
  class PanicError < Error; end

  # +LB_ERR_INVALID_LSN+: a string is not a valid +X/Y+ LSN.
  class InvalidLsnError < Error; end

  # +LB_ERR_INVALID_KEY+: a sticking key is empty or longer than {MAX_KEY_LENGTH} bytes.
  class InvalidKeyError < Error; end

  # +LB_ERR_REPLICA_UNAVAILABLE+: a replica cannot be reached.
  class ReplicaUnavailableError < Error
    include Retryable
  end

  # +LB_ERR_QUERY+: a query dlb issued itself (reading the primary's WAL position) failed.
  class QueryError < Error
    include Retryable
  end

  # +LB_ERR_UNKNOWN_HOST+: {Balancer#report_failure} was given a DSN or +host:port+ that is
  # none of the balancer's hosts (the message does not repeat it: it may hold a password).
  class UnknownHostError < Error; end

  # +LB_ERR_INTERNAL+: an error the C API has no specific code for.
  class InternalError < Error; end

  # +LB_ERR_LOGGER_UNAVAILABLE+: another logger was installed first (log callbacks are not
  # bound in this version; listed for completeness).
  class LoggerUnavailableError < Error; end

  # +LB_ERR_FORKED+: the balancer was made by another process, before a +fork+ (a Puma or
  # Unicorn worker inheriting one from a +preload_app!+ master): make a new balancer in this
  # process (after fork: Puma's +on_worker_boot+, Unicorn's +after_fork+).
  class ForkedError < Error; end

  # Exception class per C status code; an unknown (newer) code maps to {Error}.
  ERRORS_BY_CODE = {
    Status::ERR_INVALID_ARGUMENT => InvalidArgumentError,
    Status::ERR_INVALID_CONFIG => InvalidConfigError,
    Status::ERR_BUFFER_TOO_SMALL => BufferTooSmallError,
    Status::ERR_PRIMARY_UNAVAILABLE => PrimaryUnavailableError,
    Status::ERR_NO_CAUGHT_UP_REPLICA => NoCaughtUpReplicaError,
    Status::ERR_STORE => StoreError,
    Status::ERR_PANIC => PanicError,
    Status::ERR_INVALID_LSN => InvalidLsnError,
    Status::ERR_INVALID_KEY => InvalidKeyError,
    Status::ERR_REPLICA_UNAVAILABLE => ReplicaUnavailableError,
    Status::ERR_QUERY => QueryError,
    Status::ERR_UNKNOWN_HOST => UnknownHostError,
    Status::ERR_INTERNAL => InternalError,
    Status::ERR_LOGGER_UNAVAILABLE => LoggerUnavailableError,
    Status::ERR_FORKED => ForkedError
  }.freeze

  # A retryable error with a status code newer than this binding.
  class RetryableError < Error
    include Retryable
  end
end
