# frozen_string_literal: true

# A Rails-style app on ActiveRecord (models, a Rack app for the controllers, a Sidekiq job)
# whose reads dlb routes to caught-up replicas with no change in the app code: everything
# dlb is in one initializer (install_dlb below). Run against the test cluster:
#
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   cargo build --release --lib
#   ruby -Ibindings/ruby/lib bindings/ruby/examples/rails_app.rb        # with dlb
#   DLB_EXAMPLE_WITHOUT_DLB=1 ruby bindings/ruby/examples/rails_app.rb  # the same app, no dlb
#
# The demo posts, follows the redirect with the token cookie, runs the job the post enqueued
# (Sidekiq's testing mode: no Redis) and reads a few times, printing which server answered
# each read (inet_server_port()); its last line is a JSON summary. Without dlb every read is
# on the primary and dlb is never loaded. bindings/ruby/test/active_record_test.rb drives the
# same app.
#
# Routes: POST /posts?author=A&title=T (creates a Post, enqueues CountPostsJob, checks the
# post is visible, 303 to GET /posts?author=A), GET /posts?author=A (the author's titles and
# the server that answered), GET /server (which server answers a read), GET /reading (the
# same inside connected_to(role: :reading)).

require "active_record"
require "json"
require "pg"
require "rack"
require "sidekiq"
require "sidekiq/testing"

# config/database.yml: the primary, and a reading role on the same server (with dlb, reads
# of either role go to the replica dlb picks; without it, to the primary).
module RailsExample
  TABLE = ENV.fetch("DLB_EXAMPLE_TABLE", "dlb_example_rails_posts")

  module_function

  def database_configuration
    dsn = PG::Connection.conninfo_parse(ENV.fetch("DLB_TEST_PRIMARY")).to_h { |o| [o[:keyword], o[:val]] }
    primary = { "adapter" => "postgresql", "host" => dsn["host"], "port" => dsn["port"], "database" => dsn["dbname"],
                "username" => dsn["user"], "password" => dsn["password"], "pool" => 5 }.compact
    env = ActiveRecord::ConnectionHandling::DEFAULT_ENV.call
    { env => { "primary" => primary, "primary_replica" => primary.merge("replica" => true) } }
  end
end

ActiveRecord::Base.configurations = RailsExample.database_configuration
# What Rails' ActiveRecord railtie does at boot (6.1's role handlers).
ActiveRecord::Base.connection_handlers = { ActiveRecord::Base.writing_role => ActiveRecord::Base.default_connection_handler }

# ---- app/models: no dlb here ---------------------------------------------------------------

# The app's base model, as Rails generates it.
class ApplicationRecord < ActiveRecord::Base
  self.abstract_class = true
  connects_to database: { writing: :primary, reading: :primary_replica }

  # The port of the server that answers a read (to show where reads go).
  def self.server_port
    connection.select_value("SELECT inet_server_port()").to_i
  end
end

# A blog post.
class Post < ApplicationRecord
  self.table_name = RailsExample::TABLE
end

# ---- app/jobs -----------------------------------------------------------------------------

# Counts an author's posts (enqueued right after a post is created).
class CountPostsJob
  include Sidekiq::Worker

  class << self
    # What the runs saw: { "count" => n, "server_port" => port }.
    def results
      @results ||= []
    end
  end

  def perform(author)
    CountPostsJob.results << { "count" => Post.where(author: author).count, "server_port" => Post.server_port }
  end
end

# ---- app/controllers ----------------------------------------------------------------------

# The posts controller, as a Rack app.
class PostsApp
  def call(env)
    request = Rack::Request.new(env)
    author = request.params["author"].to_s
    case [request.request_method, request.path]
    when %w[POST /posts]
      post = Post.create!(author: author, title: request.params["title"].to_s)
      CountPostsJob.perform_async(author)
      raise "post #{post.id} is not visible right after its write" unless Post.where(id: post.id).exists?

      [303, { "location" => "/posts?author=#{Rack::Utils.escape(author)}" }, []]
    when %w[GET /posts]
      json(titles: Post.where(author: author).order(:id).pluck(:title), server_port: Post.server_port)
    when %w[GET /server]
      json(server_port: Post.server_port)
    when %w[GET /reading]
      ActiveRecord::Base.connected_to(role: :reading) { json(server_port: Post.server_port, posts: Post.count) }
    else
      [404, {}, []]
    end
  end

  private

  def json(body)
    [200, { "content-type" => "application/json" }, [JSON.generate(body)]]
  end
end

# ---- boot, and config/initializers/dlb.rb -------------------------------------------------

# The app's boot: the schema, the Rack stack, dlb's initializer, and the demo.
module RailsExample
  SECRET = ENV.fetch("DLB_EXAMPLE_SECRET", "example-secret-change-me-0123456789")

  module_function

  # The schema (a migration would do it; on the primary, as every query outside a request).
  def create_schema
    conn = ActiveRecord::Base.connection
    conn.execute("SET client_min_messages = warning")
    conn.execute("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, author text NOT NULL, title text NOT NULL)")
    conn.execute("RESET client_min_messages")
  end

  # The Rack stack (what `Rails.application` would be) and the balancer (nil without dlb).
  # @param dlb [Boolean] whether to run the initializer
  # @param config [Hash] more balancer configuration (the tests' lag settings)
  def build(dlb: ENV["DLB_EXAMPLE_WITHOUT_DLB"] != "1", config: {})
    create_schema
    Sidekiq::Testing.fake! # no Redis: the tests and the demo drain the jobs
    return [PostsApp.new, nil] unless dlb

    install_dlb(PostsApp.new, config)
  end

  # config/initializers/dlb.rb: all of dlb. In a Rails app:
  #   DLB_LB = DLB::Balancer.new(Rails.application.config_for(:dlb))
  #   DLB::ActiveRecord.install(balancer: DLB_LB)
  #   Rails.application.config.middleware.use DLB::RackMiddleware, balancer: DLB_LB, secret: ...
  #   Sidekiq.configure_client / configure_server { ... DLB::Sidekiq::Client / Server ... }
  def install_dlb(app, config)
    require "dlb"
    hosts = ENV.fetch("DLB_TEST_REPLICAS").split(",")
    lb = DLB::Balancer.new({ primary: ENV.fetch("DLB_TEST_PRIMARY"), replicas: { hosts: hosts }, replica_check_interval_ms: 100 }
                             .merge(config))
    DLB::ActiveRecord.install(balancer: lb)
    Sidekiq.client_middleware { |chain| chain.add DLB::Sidekiq::Client, balancer: lb }
    Sidekiq::Testing.server_middleware { |chain| chain.add DLB::Sidekiq::Server, balancer: lb }
    [DLB::RackMiddleware.new(app, balancer: lb, secret: SECRET), lb]
  end

  def demo
    app, lb = build
    if lb
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 30
      sleep 0.05 until lb.status["healthy_replicas"] == 2 || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    end
    client = Rack::MockRequest.new(app)
    author = "author-#{Process.pid}-#{rand(1 << 30)}"
    post = client.post("/posts?author=#{author}&title=hello")
    raise "POST failed: #{post.status} #{post.body}" unless post.status == 303

    cookie = post["set-cookie"].to_s[/dlb_lsn=[^;\n]+/]
    puts "POST /posts -> #{post.status} #{post['location']} (token: #{cookie ? 'cookie set' : 'none'})"
    list = JSON.parse(client.get(post["location"], "HTTP_COOKIE" => cookie.to_s).body)
    puts "GET  #{post['location']} -> #{list['titles'].inspect} from port #{list['server_port']}"
    raise "the post is missing" unless list["titles"] == ["hello"]

    job = CountPostsJob.jobs.last
    CountPostsJob.drain
    count = CountPostsJob.results.last
    puts "CountPostsJob (token #{job['dlb_lsn'].inspect}) -> #{count['count']} post(s) from port #{count['server_port']}"
    raise "the job missed the post" unless count["count"] == 1

    ports = Array.new(6) { JSON.parse(client.get("/server").body)["server_port"] }
    reading = JSON.parse(client.get("/reading").body)["server_port"]
    puts "GET /server x6 -> ports #{ports.tally}; GET /reading -> port #{reading}"
    puts JSON.generate(dlb: !lb.nil?, dlb_loaded: !defined?(DLB).nil?, list_port: list["server_port"],
                       job_port: count["server_port"], job_token: job["dlb_lsn"], read_ports: ports, reading_port: reading)
  ensure
    DLB::ActiveRecord.uninstall if lb
    lb&.close
  end
end

RailsExample.demo if $PROGRAM_NAME == __FILE__
