# frozen_string_literal: true

module DLB
  # Sidekiq middleware: read-your-writes from a request (or a job) to the jobs it enqueues.
  #
  # The client middleware puts the enqueuing work's LSN into the job payload (+"dlb_lsn"+):
  # the highest LSN of its {Context}, recorded first when it wrote since (one round trip to
  # the primary). The server middleware runs the job in a {Context} with that token, so the
  # job's {Balancer#with_replica} reads only from replicas that replayed the enqueuer's
  # writes, in any process; once the job wrote ({Balancer#with_primary}), its own later reads
  # go to the primary.
  #
  # When no replica has caught up yet, the job's +dlb+ option decides (GitLab's data
  # consistency): +:sticky+ (the default) reads from the primary; +:delayed+ puts the job
  # back for {DELAY_S} seconds once (the replicas usually catch up meanwhile) and reads from
  # the primary if they still have not.
  #
  # @example
  #   Sidekiq.configure_client do |config|
  #     config.client_middleware { |chain| chain.add DLB::Sidekiq::Client, balancer: LB }
  #   end
  #   Sidekiq.configure_server do |config|
  #     config.client_middleware { |chain| chain.add DLB::Sidekiq::Client, balancer: LB }
  #     config.server_middleware { |chain| chain.add DLB::Sidekiq::Server, balancer: LB }
  #   end
  #   class ReportJob
  #     include Sidekiq::Worker
  #     sidekiq_options dlb: :delayed
  #   end
  module Sidekiq
    # The payload field holding the causal token.
    LSN_FIELD = "dlb_lsn"
    # The job option choosing what to do when no replica has caught up.
    OPTION = "dlb"
    # The payload field marking a job put back by +:delayed+.
    DELAYED_FIELD = "dlb_delayed"
    # Modes of the job option.
    MODES = %w[sticky delayed].freeze
    # How long a +:delayed+ job waits for the replicas, in seconds.
    DELAY_S = 5

    # Client middleware: copies the current {Context}'s LSN into the job.
    class Client
      # @param options [Hash] +balancer:+ (a {Balancer}), the only option (Sidekiq's
      #   +chain.add(klass, balancer: lb)+ passes it positionally)
      # @raise [ArgumentError] a missing balancer or an unknown option (named)
      def initialize(options = {}, **keywords)
        @lb = Sidekiq.balancer_option(options.merge(keywords))
      end

      # Sidekiq's client middleware API.
      def call(_worker_class, job, _queue, _redis_pool)
        Sidekiq.mode(job) # a bad option fails at enqueue, naming it
        ctx = Context.current
        lsn = ctx&.record(@lb)
        job[LSN_FIELD] = lsn if lsn
        yield
      end
    end

    # Server middleware: runs the job in a {Context} with the token it carries.
    class Server
      # @param options [Hash] as {Client#initialize}
      def initialize(options = {}, **keywords)
        @lb = Sidekiq.balancer_option(options.merge(keywords))
      end

      # Sidekiq's server middleware API.
      def call(_worker, job, _queue, &block)
        lsn = job[LSN_FIELD]
        return Context.with(Context.new, &block) if lsn.nil?
        return if Sidekiq.mode(job) == "delayed" && !job[DELAYED_FIELD] && delay(job, lsn)

        Context.with(Context.new(lsn: lsn), &block)
      end

      private

      # Puts the job back for DELAY_S when no replica has replayed +lsn+; true when it did.
      def delay(job, lsn)
        return false if @lb.pick_replica_min_lsn(lsn).replica?

        ::Sidekiq::Client.push(job.merge(DELAYED_FIELD => true, "at" => Time.now.to_f + DELAY_S))
        true
      end
    end

    # The middleware's options: +balancer:+ only.
    # @api private
    # @return [Balancer]
    def self.balancer_option(options)
      unknown = options.keys - [:balancer]
      raise ArgumentError, "unknown option#{'s' if unknown.size > 1}: #{unknown.map(&:inspect).join(', ')}" unless unknown.empty?

      lb = options[:balancer]
      raise ArgumentError, "balancer: a DLB::Balancer is required (got #{lb.class})" unless lb.is_a?(Balancer)

      lb
    end

    # The job's +dlb+ option, checked.
    # @return [String] "sticky" or "delayed"
    # @raise [ArgumentError] another value (the message names the option)
    def self.mode(job)
      mode = (job[OPTION] || "sticky").to_s
      return mode if MODES.include?(mode)

      raise ArgumentError, "sidekiq option #{OPTION}: must be one of #{MODES.map { |m| ":#{m}" }.join(', ')} " \
                           "(got #{job[OPTION].inspect})"
    end
  end
end
