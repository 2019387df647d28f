package dlbprom

import (
	"strconv"

	"github.com/dlb-project/dlb/bindings/go/dlbsql"

	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports the database/sql statistics of every pool a dlbsql load balancer
// holds, one series per host (labels host, host_id, role), under the names of client_golang's
// DBStatsCollector with the namespace: <namespace>_sql_open_connections and so on. It reads
// the pools open at each scrape (dlbsql.DBLoadBalancer.PoolStats), so it follows dlb's host
// events with nothing to register or unregister: a replica's series appear when dlbsql opens
// its pool (the first read routed to it) and go once dlb drains the host and dlbsql closes
// the pool. Safe for concurrent use.
type PoolCollector struct {
	lb   *dlbsql.DBLoadBalancer
	opts Options
	// The descriptions, by statistic.
	maxOpen, open, inUse, idle, waitCount, waitDuration, maxIdleClosed, maxIdleTimeClosed,
	maxLifetimeClosed *prometheus.Desc
}

// NewPoolCollector returns a collector of lb's per-host pool statistics. Register it beside
// the balancer's: prometheus.MustRegister(dlbprom.New(b, opts), dlbprom.NewPoolCollector(lb,
// opts)).
func NewPoolCollector(lb *dlbsql.DBLoadBalancer, opts Options) *PoolCollector {
	if opts.Namespace == "" {
		opts.Namespace = "dlb"
	}
	c := &PoolCollector{lb: lb, opts: opts}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(opts.Namespace, "sql", name), help,
			[]string{"host", "host_id", "role"}, opts.ConstLabels)
	}
	c.maxOpen = desc("max_open_connections", "Maximum number of open connections to the database.")
	c.open = desc("open_connections", "The number of established connections both in use and idle.")
	c.inUse = desc("in_use_connections", "The number of connections currently in use.")
	c.idle = desc("idle_connections", "The number of idle connections.")
	c.waitCount = desc("wait_count_total", "The total number of connections waited for.")
	c.waitDuration = desc("wait_duration_seconds_total", "The total time blocked waiting for a new connection.")
	c.maxIdleClosed = desc("max_idle_closed_total", "The total number of connections closed due to SetMaxIdleConns.")
	c.maxIdleTimeClosed = desc("max_idle_time_closed_total", "The total number of connections closed due to SetConnMaxIdleTime.")
	c.maxLifetimeClosed = desc("max_lifetime_closed_total", "The total number of connections closed due to SetConnMaxLifetime.")
	return c
}

// Describe sends every statistic's description (the series vary with the hosts, the names
// do not).
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.maxOpen, c.open, c.inUse, c.idle, c.waitCount,
		c.waitDuration, c.maxIdleClosed, c.maxIdleTimeClosed, c.maxLifetimeClosed} {
		ch <- d
	}
}

// Collect sends the statistics of every pool open now.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.lb.PoolStats() {
		l := []string{p.Addr, strconv.FormatUint(p.HostID, 10), p.Role}
		s := p.Stats
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
		}
		counter := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
		}
		gauge(c.maxOpen, float64(s.MaxOpenConnections))
		gauge(c.open, float64(s.OpenConnections))
		gauge(c.inUse, float64(s.InUse))
		gauge(c.idle, float64(s.Idle))
		counter(c.waitCount, float64(s.WaitCount))
		counter(c.waitDuration, s.WaitDuration.Seconds())
		counter(c.maxIdleClosed, float64(s.MaxIdleClosed))
		counter(c.maxIdleTimeClosed, float64(s.MaxIdleTimeClosed))
		counter(c.maxLifetimeClosed, float64(s.MaxLifetimeClosed))
	}
}
