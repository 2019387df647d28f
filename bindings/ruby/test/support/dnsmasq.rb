# frozen_string_literal: true

require "fileutils"
require "socket"
require "tmpdir"

# A real DNS server for the event tests: dnsmasq on a loopback port, serving the records the
# test writes (each change restarts it, on the same port). Installed by scripts/bootstrap.sh.
class Dnsmasq
  BIN = ["/usr/sbin/dnsmasq", "dnsmasq"].find { |b| File.exist?(b) } || "dnsmasq"

  attr_reader :port

  def initialize(records)
    @dir = Dir.mktmpdir("dlb-ruby-dns-")
    @pid = nil
    5.times do
      @port = free_port
      return if try_records(records)
    end
    log = File.join(@dir, "log")
    raise "dnsmasq did not start: #{File.exist?(log) ? File.read(log) : 'no log'}"
  end

  # Replaces the records; returns once the server answers again.
  def records=(records)
    5.times { return if try_records(records) }
    raise "dnsmasq did not restart"
  end

  def stop
    return unless @pid

    Process.kill("TERM", @pid)
    Process.wait(@pid)
    @pid = nil
  rescue Errno::ESRCH, Errno::ECHILD
    @pid = nil
  end

  def close
    stop
    FileUtils.rm_rf(@dir)
  end

  private

  def free_port
    s = UDPSocket.new
    s.bind("127.0.0.1", 0)
    s.addr[1]
  ensure
    s&.close
  end

  def try_records(records)
    stop
    conf = File.join(@dir, "dnsmasq.conf")
    File.write(conf, "no-resolv\nno-hosts\nno-poll\nlocal-ttl=1\nauth-ttl=1\n#{records.join("\n")}\n")
    @pid = Process.spawn(BIN, "--keep-in-foreground", "--bind-interfaces", "--listen-address=127.0.0.1",
                         "--port=#{@port}", "--conf-file=#{conf}", "--user=root", "--pid-file=#{File.join(@dir, 'pid')}",
                         out: File::NULL, err: File.join(@dir, "log"))
    ready?
  end

  # Polls with a root SOA query until an answer comes (bounded), or the server exits.
  def ready?
    query = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1].pack("C*")
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
      return false if Process.wait(@pid, Process::WNOHANG)

      s = UDPSocket.new
      begin
        s.send(query, 0, "127.0.0.1", @port)
        return true if s.wait_readable(0.1) && s.recv(512)
      rescue SystemCallError
        nil
      ensure
        s.close
      end
    end
    stop
    false
  end
end
