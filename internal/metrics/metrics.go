// Package metrics exports a broker's counters in the Prometheus text
// format. Its Collector reads broker.Stats at scrape time: the engine
// keeps its atomic counters as it always does, and pays nothing more for
// being scraped.
package metrics

import (
	"bytes"
	"net/http"
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/libspbroker"
)

// Prefix starts every metric's name.
const Prefix = "one_socket_"

// Metrics is a registry holding one Collector for the daemon's broker.
type Metrics struct {
	reg *prometheus.Registry
	c   *Collector
}

// New returns the daemon's metrics, reporting version in build_info. It
// reports no broker until SetBroker.
func New(version string) *Metrics {
	c := &Collector{version: version}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return &Metrics{reg: reg, c: c}
}

// SetBroker makes b the broker reported; the daemon calls it each time a
// new engine takes over (an upgrade in place).
func (m *Metrics) SetBroker(b *broker.Broker) { m.c.b.Store(b) }

// Text returns the metrics in the Prometheus text format.
func (m *Metrics) Text() ([]byte, error) {
	mfs, err := m.reg.Gather()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// Handler serves the metrics over HTTP, at whatever path it is mounted.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	})
}

// Collector is a prometheus.Collector reading a broker's Stats.
type Collector struct {
	version string
	b       atomic.Pointer[broker.Broker]
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Prefix+name, help, labels, nil)
}

var (
	descAccepted = desc("accepted_total", "Client connections accepted, refused ones included.")
	descPaired   = desc("paired_total", "Pairs handed out (two clients each).")
	descWaiting  = desc("waiting", "Clients waiting for a peer now, by pairing mode.", "mode")
	descConns    = desc("connections", "Open client connections now (handshaking and waiting).")
	descKept     = desc("kept", "Waiting clients kept in the service manager's store now, for a crash (--fdstore).")
	descRefused  = desc("refused_total", "Connections or requests refused: limit (no room, or over --max-conns-per-uid), "+
		"shed (a handshake closed to make room for another user), policy (--policy), quota (--max-waiting-per-uid).", "reason")
	descProtocol    = desc("protocol_errors_total", "Protocol violations by clients, by kind.", "kind")
	descTimedOut    = desc("timed_out_total", "Clients that did not send a whole GET_PAIR within --handshake-timeout.")
	descVanished    = desc("vanished_total", "Clients that hung up before being paired.")
	descExpired     = desc("expired_total", "Waiting clients disconnected after --max-wait.")
	descWait        = desc("wait_seconds", "How long each pair's waiting client waited for its peer.")
	descUpgrades    = desc("upgrades_total", "Upgrades in place this daemon's run went through.")
	descRestored    = desc("restored_clients_total", "Clients taken back from the service manager's store after a crash.")
	descStoreFailed = desc("store_failed_total", "Calls to the service manager's store that failed.")
	descBuild       = desc("build_info", "The daemon's version and the Go version it was built with; always 1.", "version", "goversion")
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descPaired, descWaiting, descConns, descKept,
		descRefused, descProtocol, descTimedOut, descVanished, descExpired, descWait,
		descUpgrades, descRestored, descStoreFailed, descBuild} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one Stats snapshot per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, c.version, runtime.Version())
	b := c.b.Load()
	if b == nil {
		return
	}
	s := b.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(descAccepted, s.Accepted)
	counter(descPaired, s.Paired)
	for m, n := range s.WaitingByMode {
		gauge(descWaiting, n, libspbroker.Mode(m).String())
	}
	gauge(descConns, s.Conns)
	gauge(descKept, s.Kept)
	counter(descRefused, s.Refused, "limit")
	counter(descRefused, s.Shed, "shed")
	counter(descRefused, s.Denied, "policy")
	counter(descRefused, s.OverQuota, "quota")
	for k, n := range s.ProtocolErrors {
		counter(descProtocol, n, broker.ProtocolErrorKind(k).String())
	}
	counter(descTimedOut, s.TimedOut)
	counter(descVanished, s.Vanished)
	counter(descExpired, s.Expired)
	counter(descUpgrades, s.Upgrades)
	counter(descRestored, s.Restored)
	counter(descStoreFailed, s.StoreFailed)

	buckets := make(map[float64]uint64, len(broker.WaitBuckets))
	var cum uint64
	for i, ub := range broker.WaitBuckets {
		cum += s.Wait.Counts[i]
		buckets[ub] = cum
	}
	ch <- prometheus.MustNewConstHistogram(descWait, s.Wait.Count(), s.Wait.SumSeconds, buckets)
}
