# frozen_string_literal: true

# A Rack worker process for rack_test.rb: a small registry app (POST /repos/NAME writes a
# row and redirects, GET /repos/NAME lists its rows from a replica) behind
# DLB::RackMiddleware, with its own balancer and embedded LSN store. Reads requests as JSON
# lines on stdin ({"method", "path", "cookie", "header"}) and answers each with a JSON line
# ({"status", "headers", "body"}), like one Puma worker of several.
#
# Environment: DLB_WORKER_CONFIG (the balancer's JSON), DLB_WORKER_SECRET, DLB_WORKER_TABLE.

require "dlb"
require "json"
require "rack"

LB = DLB::Balancer.new(ENV.fetch("DLB_WORKER_CONFIG"))
TABLE = ENV.fetch("DLB_WORKER_TABLE")

def repo_of(request)
  request.path[%r{\A/repos/([^/]+)}, 1]
end

app = lambda do |env|
  request = Rack::Request.new(env)
  repo = repo_of(request)
  if request.post?
    LB.with_primary { |conn| conn.exec_params("INSERT INTO #{TABLE} (key) VALUES ($1)", [repo]) }
    [303, { "location" => "/repos/#{repo}" }, []]
  else
    ids, port = LB.with_replica("repo:#{repo}") do |conn|
      [conn.exec_params("SELECT id FROM #{TABLE} WHERE key = $1 ORDER BY id", [repo]).column_values(0).map(&:to_i),
       conn.exec("SELECT inet_server_port()").getvalue(0, 0)]
    end
    [200, { "content-type" => "application/json" }, [JSON.generate(ids: ids, port: port)]]
  end
end

stack = DLB::RackMiddleware.new(app, balancer: LB, secret: ENV.fetch("DLB_WORKER_SECRET"),
                                     keys: ->(request) { "repo:#{repo_of(request)}" })

$stdout.sync = true
puts JSON.generate(ready: Process.pid)
$stdin.each_line do |line|
  req = JSON.parse(line)
  env = Rack::MockRequest.env_for(req["path"], method: req["method"])
  env["HTTP_COOKIE"] = req["cookie"] if req["cookie"]
  env["HTTP_X_DLB_LSN"] = req["header"] if req["header"]
  status, headers, body = stack.call(env)
  text = +""
  body.each { |part| text << part }
  body.close if body.respond_to?(:close)
  puts JSON.generate(status: status, headers: headers, body: text)
end
LB.close
