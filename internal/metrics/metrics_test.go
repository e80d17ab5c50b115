package metrics_test

import (
	"bytes"
	"net"
	"path/filepath"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/broker"
	"github.com/one-socket/one-socket/internal/metrics"
)

func serving(t testing.TB) *broker.Broker {
	t.Helper()
	b, err := broker.New(nil)
	require.NoError(t, err)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "b.sock"), Net: "unix"})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { b.Serve(ln); close(done) }()
	t.Cleanup(func() { b.Shutdown(); <-done })
	return b
}

// TestText checks the families and the values of a fresh broker with
// carried totals, through client_golang's own parser.
func TestText(t *testing.T) {
	m := metrics.New("v9.9.9")
	text, err := m.Text()
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	require.NoError(t, err)
	assert.Len(t, mfs, 1, "without a broker only build_info: %s", text)

	b := serving(t)
	b.Carry(broker.Stats{Paired: 7, Denied: 2, Shed: 1, Upgrades: 1})
	m.SetBroker(b)
	text, err = m.Text()
	require.NoError(t, err)
	mfs, err = p.TextToMetricFamilies(bytes.NewReader(text))
	require.NoError(t, err)
	for _, name := range []string{"accepted_total", "paired_total", "waiting", "connections", "kept",
		"refused_total", "protocol_errors_total", "timed_out_total", "vanished_total", "expired_total",
		"wait_seconds", "upgrades_total", "restored_clients_total", "store_failed_total", "build_info"} {
		assert.Contains(t, mfs, "one_socket_"+name)
	}
	assert.Equal(t, 7.0, mfs["one_socket_paired_total"].GetMetric()[0].GetCounter().GetValue())
	assert.Equal(t, 1.0, mfs["one_socket_upgrades_total"].GetMetric()[0].GetCounter().GetValue())
	reasons := map[string]float64{}
	for _, s := range mfs["one_socket_refused_total"].GetMetric() {
		reasons[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
	}
	assert.Equal(t, map[string]float64{"limit": 0, "shed": 1, "policy": 2, "quota": 0}, reasons)
	assert.Len(t, mfs["one_socket_waiting"].GetMetric(), 3)
	assert.Len(t, mfs["one_socket_protocol_errors_total"].GetMetric(), 10)
	assert.Len(t, mfs["one_socket_wait_seconds"].GetMetric()[0].GetHistogram().GetBucket(), len(broker.WaitBuckets)+1, "the bounds and +Inf")
}

// BenchmarkText is the cost of one scrape's rendering.
func BenchmarkText(b *testing.B) {
	m := metrics.New("v9.9.9")
	m.SetBroker(serving(b))
	for b.Loop() {
		if _, err := m.Text(); err != nil {
			b.Fatal(err)
		}
	}
}
