# frozen_string_literal: true

# A small registry app on Rack with a Sidekiq job, run as two worker processes (like two Puma
# workers, each with its own balancer and embedded LSN store): the write → redirect → list
# round and a job, with read-your-writes across the processes.
#
#   bash scripts/testenv.sh up && eval "$(bash scripts/testenv.sh env)"
#   cargo build --release --lib
#   ruby -Ibindings/ruby/lib examples/ruby/rack_app.rb          # the demo
#
# `rack_app.rb worker` is one worker: it reads requests as JSON lines on stdin
# ({"method", "path", "cookie", "header", "body"}) and answers each with a JSON line
# ({"status", "headers", "body"}); the demo (and bindings/ruby/test/rack_test.rb) drive two.
# Routes: POST /repos/NAME (a tag; enqueues TagCountJob; 303 to GET /repos/NAME, the job's
# payload in X-Job), GET /repos/NAME (the tags, read from a replica), POST /jobs (runs the job
# payload in the body through the Sidekiq server middleware, as a Sidekiq process would),
# GET /health (how many replicas the worker's balancer counts healthy).
#
# Environment: DLB_TEST_PRIMARY, DLB_TEST_REPLICAS (the test cluster), or DLB_WORKER_CONFIG
# (the balancer's JSON); DLB_WORKER_SECRET (signs the token), DLB_WORKER_TABLE.

require "dlb"
require "json"
require "rack"
require "sidekiq"
require "sidekiq/testing"
require "securerandom"

# The example, in a module so that the Rack test can drive its workers (WorkerProcess).
module RackExample
  TABLE = ENV.fetch("DLB_WORKER_TABLE", "dlb_example_rack_tags")
  SECRET = ENV.fetch("DLB_WORKER_SECRET", "example-secret-change-me-0123456789")

  module_function

  def config_json
    ENV.fetch("DLB_WORKER_CONFIG") do
      JSON.generate(primary: ENV.fetch("DLB_TEST_PRIMARY"), replicas: { hosts: ENV.fetch("DLB_TEST_REPLICAS").split(",") },
                    replica_check_interval_ms: 100)
    end
  end

  # Counts a repository's tags from a replica that has its enqueuer's writes.
  class TagCountJob
    include Sidekiq::Worker

    class << self
      attr_accessor :balancer, :last_result
    end

    def perform(repo)
      TagCountJob.last_result = TagCountJob.balancer.with_replica("repo:#{repo}") do |conn|
        conn.exec_params("SELECT count(*) FROM #{TABLE} WHERE key = $1", [repo]).getvalue(0, 0).to_i
      end
    end
  end

  def repo_of(request)
    request.path[%r{\A/repos/([^/]+)}, 1]
  end

  # The app of one worker process, behind DLB::RackMiddleware.
  def build_app(lb)
    TagCountJob.balancer = lb
    Sidekiq::Testing.fake! # no Redis here: jobs travel in the responses (X-Job)
    Sidekiq.client_middleware { |chain| chain.add DLB::Sidekiq::Client, balancer: lb }
    Sidekiq::Testing.server_middleware { |chain| chain.add DLB::Sidekiq::Server, balancer: lb }
    app = lambda do |env|
      request = Rack::Request.new(env)
      repo = repo_of(request)
      if request.path == "/health"
        [200, { "content-type" => "application/json" }, [JSON.generate(healthy_replicas: lb.status["healthy_replicas"],
                                                                   replicas: lb.status["replicas"].map { |r| r.slice("addr", "state", "reason") })]]
      elsif request.post? && request.path == "/jobs"
        TagCountJob.jobs << JSON.parse(request.body.read)
        TagCountJob.perform_one
        [200, { "content-type" => "application/json" }, [JSON.generate(count: TagCountJob.last_result)]]
      elsif request.post?
        lb.with_primary { |conn| conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1)", [repo]) }
        TagCountJob.perform_async(repo)
        [303, { "location" => "/repos/#{repo}", "x-job" => JSON.generate(TagCountJob.jobs.pop) }, []]
      else
        ids, port = lb.with_replica("repo:#{repo}") do |conn|
          [conn.exec_params("SELECT id FROM #{TABLE} WHERE key = $1 ORDER BY id", [repo]).column_values(0).map(&:to_i),
           conn.exec("SELECT inet_server_port()").getvalue(0, 0)]
        end
        [200, { "content-type" => "application/json" }, [JSON.generate(ids: ids, port: port)]]
      end
    end
    DLB::RackMiddleware.new(app, balancer: lb, secret: SECRET, keys: ->(request) { repo_of(request)&.then { |r| "repo:#{r}" } })
  end

  # One worker: requests as JSON lines on stdin, responses on stdout.
  def serve
    lb = DLB::Balancer.new(config_json)
    lb.with_primary do |conn|
      conn.exec("SET client_min_messages = warning")
      conn.exec("CREATE TABLE IF NOT EXISTS #{TABLE} (id bigserial PRIMARY KEY, key text NOT NULL)")
      conn.exec("RESET client_min_messages")
    end
    stack = build_app(lb)
    $stdout.sync = true
    puts JSON.generate(ready: Process.pid)
    $stdin.each_line do |line|
      req = JSON.parse(line)
      env = Rack::MockRequest.env_for(req["path"], method: req["method"], input: req["body"].to_s)
      env["HTTP_COOKIE"] = req["cookie"] if req["cookie"]
      env["HTTP_X_DLB_LSN"] = req["header"] if req["header"]
      status, headers, body = stack.call(env)
      text = +""
      body.each { |part| text << part }
      body.close if body.respond_to?(:close)
      puts JSON.generate(status: status, headers: headers, body: text)
    end
    lb.close
  end

  # A worker process driven through its stdin/stdout.
  class WorkerProcess
    attr_reader :pid

    def initialize(env = {})
      lib = File.dirname($LOADED_FEATURES.find { |f| f.end_with?("/dlb.rb") })
      @io = IO.popen(env, [RbConfig.ruby, "-w", "-I", lib, __FILE__, "worker"], "r+")
      @pid = JSON.parse(@io.gets || raise("the worker did not start")).fetch("ready")
    end

    def request(method, path, cookie: nil, header: nil, body: nil)
      @io.puts(JSON.generate(method: method, path: path, cookie: cookie, header: header, body: body))
      JSON.parse(@io.gets || raise("worker #{@pid} died"))
    end

    def close
      @io.close_write
      @io.read
      @io.close
    end
  end

  def demo
    a = WorkerProcess.new
    b = WorkerProcess.new
    repo = "gitlab-org_registry-#{SecureRandom.hex(6)}"
    post = a.request("POST", "/repos/#{repo}")
    cookie = Array(post["headers"]["set-cookie"]).join("\n")[/dlb_lsn=[^;\n]+/]
    puts "worker #{a.pid}: POST /repos/#{repo} -> #{post['status']} #{post['headers']['location']} (token cookie set)"
    list = JSON.parse(b.request("GET", post["headers"]["location"], cookie: cookie)["body"])
    puts "worker #{b.pid}: GET  /repos/#{repo} -> #{list['ids'].size} tag(s), read on port #{list['port']}"
    raise "read-your-writes broken: the tag is missing" unless list["ids"].size == 1

    job = post["headers"]["x-job"]
    count = JSON.parse(b.request("POST", "/jobs", body: job)["body"])["count"]
    puts "worker #{b.pid}: TagCountJob (token #{JSON.parse(job)['dlb_lsn']}) -> #{count} tag(s)"
    raise "the job missed its enqueuer's write" unless count == 1
  ensure
    a&.close
    b&.close
  end
end

if $PROGRAM_NAME == __FILE__
  ARGV.first == "worker" ? RackExample.serve : RackExample.demo
end
