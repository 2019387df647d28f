# frozen_string_literal: true

module DLB
  # The causal state of one unit of work (a web request, a job): the highest LSN it must
  # read at least (a causal token carried in from a previous request or from the job that
  # enqueued it, or recorded by its own writes), its sticking keys, and whether it wrote
  # since its LSN was last recorded. Set by {DLB::RackMiddleware} and the Sidekiq server
  # middleware; {Balancer#with_replica} and {Balancer#read_route} honour it (after a write
  # not yet recorded, the work's reads go to the primary), the Sidekiq client middleware
  # copies its LSN into jobs.
  #
  # Fiber-local: each request or job sees its own. Not shared between threads.
  class Context
    # The key under which a context's LSN is recorded when the work declared no key.
    DEFAULT_KEY = "dlb:context"

    # @return [String, nil] the highest LSN ("X/Y") this work must read at least
    attr_reader :lsn
    # @return [Array<String>] the sticking keys the work declared
    attr_reader :keys

    # @param lsn [String, nil] a causal token carried in
    # @param keys [Array<String>] sticking keys
    def initialize(lsn: nil, keys: [])
      @lsn = lsn
      @keys = keys.map(&:to_s).freeze
      @wrote = false
      @seeded = {}
    end

    # @return [Context, nil] the current fiber's context
    def self.current
      Thread.current[:__dlb_context__]
    end

    # Runs the block with +context+ as the current one, then restores the previous one.
    # @param context [Context]
    # @return [Object] the block's value
    def self.with(context)
      previous = Thread.current[:__dlb_context__]
      Thread.current[:__dlb_context__] = context
      begin
        yield context
      ensure
        Thread.current[:__dlb_context__] = previous
      end
    end

    # Raises the context's LSN to +lsn+ (an LSN never moves backwards).
    # @param lsn [String, nil] "X/Y"
    # @return [String, nil] the context's LSN
    def observe(lsn)
      @lsn = lsn if lsn && (@lsn.nil? || Context.lsn_value(lsn) > Context.lsn_value(@lsn))
      @lsn
    end

    # Notes that the work wrote on the primary (from {Balancer#with_primary}): its reads go to
    # the primary until {#record}.
    def wrote!
      @wrote = true
    end

    # @return [Boolean] whether the work wrote since its LSN was last recorded
    def wrote?
      @wrote
    end

    # Records the primary's LSN for the context's keys (or {DEFAULT_KEY}) when the work wrote
    # since the last time, so that later reads of any of them, here or wherever the token
    # goes, see the writes. *Blocking*: a round trip to the primary when it records.
    # @param balancer [Balancer]
    # @return [String, nil] the context's LSN
    def record(balancer)
      return @lsn unless @wrote

      first, *rest = @keys.empty? ? [DEFAULT_KEY] : @keys
      lsn = balancer.record_lsn(first)
      rest.each { |key| balancer.record_lsn_value(key, lsn) }
      @wrote = false
      observe(lsn)
    end

    # Makes +key+'s recorded LSN at least the context's (once per key and balancer), so that
    # a keyed pick in this process honours a token carried in from elsewhere.
    # @api private
    def seed(balancer, key)
      return if @lsn.nil? || @seeded[[balancer.object_id, key, @lsn]]

      balancer.record_lsn_value(key, @lsn)
      @seeded[[balancer.object_id, key, @lsn]] = true
    end

    # "X/Y" as an Integer, to compare LSNs.
    # @param lsn [String]
    # @return [Integer]
    # @raise [InvalidLsnError] not an X/Y LSN
    def self.lsn_value(lsn)
      hi, sep, lo = lsn.to_s.partition("/")
      raise InvalidLsnError.new("not an X/Y LSN", code: Status::ERR_INVALID_LSN) unless sep == "/" && hex?(hi) && hex?(lo)

      (hi.to_i(16) << 32) | lo.to_i(16)
    end

    def self.hex?(text)
      text.match?(/\A\h{1,8}\z/)
    end
    private_class_method :hex?
  end
end
