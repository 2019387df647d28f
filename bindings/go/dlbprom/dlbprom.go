// Package dlbprom exposes a dlb.Balancer's metrics to Prometheus's client_golang: a
// prometheus.Collector with a configurable namespace and constant labels.
//
// It reads the balancer's own exposition text (dlb.Balancer.Metrics) at each scrape and
// re-emits every series as a constant metric (counters, gauges, and the latency histograms
// with their buckets, sum and count): renamed from dlb_<name> to
// <namespace>_<name>, with the constant labels added. Whatever dlb exposes is exposed, with
// dlb's help texts; nothing here lists metric names. It is an unchecked collector (its series
// depend on the replicas present).
//
// It lives in its own module (github.com/dlb-project/dlb/bindings/go/dlbprom) so that the core package keeps no
// third-party dependency.
package dlbprom

import (
	"math"
	"strings"

	dlb "github.com/dlb-project/dlb/bindings/go"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Options configure a Collector.
type Options struct {
	// Namespace prefixes every metric name (default "dlb").
	Namespace string
	// ConstLabels are added to every series (e.g. {"cluster": "main"}).
	ConstLabels prometheus.Labels
}

// Collector is a prometheus.Collector over one balancer. Safe for concurrent use.
type Collector struct {
	b    *dlb.Balancer
	opts Options
}

// New returns a collector of b's metrics. Register it:
// prometheus.MustRegister(dlbprom.New(b, dlbprom.Options{Namespace: "registry_db"})).
func New(b *dlb.Balancer, opts Options) *Collector {
	if opts.Namespace == "" {
		opts.Namespace = "dlb"
	}
	return &Collector{b: b, opts: opts}
}

// Describe sends nothing: the collector is unchecked.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect reads the balancer's metrics and sends them. A closed balancer, or text that
// cannot be parsed, is reported as an invalid metric (the scrape shows the error).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	text, err := c.b.Metrics()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc(c.name("collector_error"),
			"dlb's metrics could not be read", nil, c.opts.ConstLabels), err)
		return
	}
	families, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		ch <- prometheus.NewInvalidMetric(prometheus.NewDesc(c.name("collector_error"),
			"dlb's metrics could not be parsed", nil, c.opts.ConstLabels), err)
		return
	}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			if metric, ok := c.convert(name, mf, m); ok {
				ch <- metric
			}
		}
	}
}

func (c *Collector) name(dlbName string) string {
	return prometheus.BuildFQName(c.opts.Namespace, "", strings.TrimPrefix(dlbName, "dlb_"))
}

func (c *Collector) convert(name string, mf *dto.MetricFamily, m *dto.Metric) (prometheus.Metric, bool) {
	var keys, values []string
	for _, l := range m.GetLabel() {
		keys = append(keys, l.GetName())
		values = append(values, l.GetValue())
	}
	desc := prometheus.NewDesc(c.name(name), mf.GetHelp(), keys, c.opts.ConstLabels)
	var kind prometheus.ValueType
	var v float64
	var metric prometheus.Metric
	var err error
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		kind, v = prometheus.CounterValue, m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		kind, v = prometheus.GaugeValue, m.GetGauge().GetValue()
	case dto.MetricType_UNTYPED:
		kind, v = prometheus.UntypedValue, m.GetUntyped().GetValue()
	case dto.MetricType_HISTOGRAM:
		// dlb's latency histograms (probe, live check, store operation, sticky pick).
		h := m.GetHistogram()
		buckets := make(map[float64]uint64, len(h.GetBucket()))
		for _, b := range h.GetBucket() {
			if !math.IsInf(b.GetUpperBound(), +1) { // implicit: the sample count
				buckets[b.GetUpperBound()] = b.GetCumulativeCount()
			}
		}
		metric, err = prometheus.NewConstHistogram(desc, h.GetSampleCount(), h.GetSampleSum(),
			buckets, values...)
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		quantiles := make(map[float64]float64, len(s.GetQuantile()))
		for _, q := range s.GetQuantile() {
			quantiles[q.GetQuantile()] = q.GetValue()
		}
		metric, err = prometheus.NewConstSummary(desc, s.GetSampleCount(), s.GetSampleSum(),
			quantiles, values...)
	default:
		return nil, false
	}
	if metric == nil && err == nil {
		metric, err = prometheus.NewConstMetric(desc, kind, v, values...)
	}
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err), true
	}
	return metric, true
}
