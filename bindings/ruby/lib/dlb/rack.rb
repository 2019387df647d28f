# frozen_string_literal: true

require "openssl"
require "rack"

module DLB
  # Rack middleware: read-your-writes per request, across processes.
  #
  # Each request runs in a {Context} holding the keys the app declares for it (a lambda of
  # the request) and the causal token the client brings back: the LSN of its last write, in
  # a signed cookie or header. Reads through {Balancer#with_replica} (or {Balancer#read_route})
  # then only go to replicas that replayed it; once the request wrote ({Balancer#with_primary}),
  # its own later reads go to the primary. After a successful (status < 400) request with
  # a method other than GET/HEAD/OPTIONS, the primary's LSN is recorded for the keys and sent
  # back as the new token (cookie and header), so the next request, the GET after a
  # redirect-after-POST, reads its own write even when another worker process or instance
  # serves it with its own embedded LSN store.
  # A GET (HEAD, OPTIONS) that wrote ({Context#wrote!}: {Balancer#with_primary}, an
  # ActiveRecord write with {DLB::ActiveRecord}) gets the token too.
  #
  # @example config.ru
  #   LB = DLB::Balancer.new(JSON.parse(File.read("dlb.json")))
  #   use DLB::RackMiddleware, balancer: LB, secret: ENV.fetch("DLB_TOKEN_SECRET"),
  #                            keys: ->(req) { req.path[%r{\A/repos/([^/]+)}, 1]&.then { |r| "repo:#{r}" } }
  class RackMiddleware
    # The cookie carrying the token, unless +cookie:+ says otherwise.
    DEFAULT_COOKIE = "dlb_lsn"
    # The request and response header carrying the token (for API clients), unless +header:+
    # says otherwise.
    DEFAULT_HEADER = "X-DLB-LSN"
    # The token cookie's lifetime in seconds, unless +max_age:+ says otherwise: long enough for
    # any redirect, short enough not to follow a client for long.
    DEFAULT_MAX_AGE_S = 300
    # Methods that do not write (no LSN recorded after them).
    SAFE_METHODS = %w[GET HEAD OPTIONS].freeze
    # The Rack env key holding the request's {Context}.
    ENV_KEY = "dlb.context"

    # @param app [#call] the Rack app
    # @param balancer [Balancer]
    # @param secret [String] signs the token (HMAC-SHA256); at least 16 bytes. The same in
    #   every process that must accept the tokens.
    # @param keys [#call, nil] the request's sticking keys: called with a +Rack::Request+,
    #   returns a String, an Array of them or nil (no key: the LSN is recorded under
    #   {Context::DEFAULT_KEY})
    # @param cookie [String, nil] the cookie name (nil: no cookie, header only)
    # @param header [String] the header name
    # @param max_age [Numeric, ActiveSupport::Duration] the cookie's lifetime (seconds, or a duration)
    # @param secure [Boolean] the cookie's Secure flag
    # @raise [ArgumentError] an unknown option (named by Ruby), a short secret
    def initialize(app, balancer:, secret:, keys: nil, cookie: DEFAULT_COOKIE, header: DEFAULT_HEADER,
                   max_age: DEFAULT_MAX_AGE_S, secure: false)
      raise TypeError, "balancer must be a DLB::Balancer (got #{balancer.class})" unless balancer.is_a?(Balancer)
      raise ArgumentError, "secret must be a String of at least 16 bytes" unless secret.is_a?(String) && secret.bytesize >= 16
      raise TypeError, "keys must respond to call (got #{keys.class})" unless keys.nil? || keys.respond_to?(:call)

      @app = app
      @lb = balancer
      @secret = secret
      @keys = keys
      @cookie = cookie
      @header = header
      @env_header = "HTTP_#{header.upcase.tr('-', '_')}"
      @max_age = Duration.to_s_whole(max_age, "max_age")
      @secure = secure
    end

    # @param env [Hash] the Rack env
    # @return [Array] the Rack response
    def call(env)
      request = ::Rack::Request.new(env)
      ctx = Context.new(lsn: incoming_token(request), keys: Array(@keys&.call(request)).compact)
      env[ENV_KEY] = ctx
      Context.with(ctx) do
        status, headers, body = @app.call(env)
        if status.to_i < 400 && (ctx.wrote? || !SAFE_METHODS.include?(request.request_method))
          ctx.wrote!
          attach_token(headers, ctx.record(@lb))
        end
        [status, headers, body]
      end
    end

    # The signed form of an LSN: +"LSN--HMAC"+ (hex).
    # @param lsn [String]
    # @return [String]
    def sign(lsn)
      "#{lsn}--#{OpenSSL::HMAC.hexdigest('SHA256', @secret, lsn)}"
    end

    # The LSN of a signed token, or nil when it is missing, forged or malformed.
    # @param token [String, nil]
    # @return [String, nil]
    def verify(token)
      lsn, sep, mac = token.to_s.rpartition("--")
      return nil if sep.empty? || !::Rack::Utils.secure_compare(sign(lsn), token.to_s)
      return nil unless mac.size == 64

      Context.lsn_value(lsn) && lsn
    rescue InvalidLsnError
      nil
    end

    private

    # The header's token wins over the cookie's (an API client says what it wants).
    def incoming_token(request)
      verify(request.get_header(@env_header)) || (@cookie && verify(request.cookies[@cookie]))
    end

    def attach_token(headers, lsn)
      return if lsn.nil?

      token = sign(lsn)
      headers[@header] = token
      return unless @cookie

      ::Rack::Utils.set_cookie_header!(headers, @cookie,
                                       { value: token, path: "/", max_age: @max_age.to_s,
                                         httponly: true, secure: @secure, same_site: :lax })
    end
  end
end
