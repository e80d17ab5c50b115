package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// freePort returns a loopback address:port nothing listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// scrape fetches /metrics over TCP (addr host:port) or a Unix socket
// (addr unix:PATH), retrying while the daemon starts.
func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	tr := &http.Transport{}
	url := "http://" + addr + "/metrics"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		}
		url = "http://one-socket/metrics"
	}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	var body []byte
	require.Eventually(t, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		body, err = io.ReadAll(resp.Body)
		return err == nil
	}, 10*time.Second, 20*time.Millisecond, "scrape %s", url)
	return body
}

// parseMetrics parses the text format with client_golang's parser.
func parseMetrics(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	require.NoError(t, err, "%s", text)
	return mfs
}

// metricValue returns the value of family name's sample with labels
// (name, value pairs).
func metricValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	mf := mfs[name]
	require.NotNil(t, mf, "no metric %s", name)
next:
	for _, m := range mf.GetMetric() {
		want := map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			want[labels[i]] = labels[i+1]
		}
		for _, lp := range m.GetLabel() {
			if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, labels)
	return 0
}

// promtoolCheck runs promtool check metrics on text: the linter of the
// Prometheus project for metric names, types and help.
func promtoolCheck(t *testing.T, text []byte) {
	t.Helper()
	p, err := exec.LookPath("promtool")
	testutil.Need(t, err == nil, "promtool is not installed: apt-get install prometheus (.ci/run does)")
	cmd := exec.Command(p, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "promtool check metrics:\n%s\n%s", out, text)
}

// waitClient sends a GET_PAIR for key in mode and leaves the client
// waiting; the caller closes it.
func waitClient(t *testing.T, path string, key []byte, mode spb.Mode) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		c, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	}
	require.NoError(t, err)
	_, err = c.Write(getPairWire(key, mode))
	require.NoError(t, err)
	return c
}

// TestMetrics pairs clients through a daemon serving --metrics-listen and
// scrapes it: over TCP, over a unix: socket, and with the control
// protocol's metrics command, each parsed as Prometheus text and checked
// by promtool.
func TestMetrics(t *testing.T) {
	for _, tc := range []struct {
		name   string
		listen func(t *testing.T) string
	}{
		{"tcp", freePort},
		{"unix", func(t *testing.T) string { return "unix:" + filepath.Join(t.TempDir(), "metrics.sock") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := tc.listen(t)
			path := sockPath(t)
			ctl := filepath.Join(filepath.Dir(path), "one-socket.ctl")
			d := startDaemon(t, path, "--metrics-listen", addr)

			mfs := parseMetrics(t, scrape(t, addr))
			assert.Equal(t, 0.0, metricValue(t, mfs, "one_socket_paired_total"))
			assert.Equal(t, 1.0, metricValue(t, mfs, "one_socket_build_info", "version", testVersion))

			for range 3 {
				pairOnce(t, path)
			}
			w1 := waitClient(t, path, uniqueKey("wait"), spb.ModeServer)
			defer w1.Close()
			w2 := waitClient(t, path, uniqueKey("wait"), spb.ModeNone)
			defer w2.Close()
			w3 := waitClient(t, path, uniqueKey("wait"), spb.ModeNone)
			defer w3.Close()

			var text []byte
			require.Eventually(t, func() bool {
				text = scrape(t, addr)
				mfs = parseMetrics(t, text)
				return metricValue(t, mfs, "one_socket_waiting", "mode", "none") == 2
			}, 10*time.Second, 20*time.Millisecond, "two waiting in mode none")
			assert.Equal(t, 3.0, metricValue(t, mfs, "one_socket_paired_total"))
			assert.Equal(t, 3.0, metricValue(t, mfs, "one_socket_wait_seconds"), "wait histogram count")
			assert.Equal(t, 1.0, metricValue(t, mfs, "one_socket_waiting", "mode", "server"))
			assert.Equal(t, 0.0, metricValue(t, mfs, "one_socket_waiting", "mode", "client"))
			assert.Equal(t, 3.0, metricValue(t, mfs, "one_socket_connections"))
			// Nine clients, and the probe with which startDaemon waits for the socket.
			assert.Equal(t, 10.0, metricValue(t, mfs, "one_socket_accepted_total"))
			assert.Equal(t, 0.0, metricValue(t, mfs, "one_socket_refused_total", "reason", "policy"))
			assert.Equal(t, 0.0, metricValue(t, mfs, "one_socket_protocol_errors_total", "kind", "version"))
			h := mfs["one_socket_wait_seconds"].GetMetric()[0].GetHistogram()
			assert.Equal(t, dto.MetricType_HISTOGRAM, mfs["one_socket_wait_seconds"].GetType())
			assert.Greater(t, h.GetSampleSum(), 0.0)
			promtoolCheck(t, text)

			// The control protocol's metrics command gives the same text.
			reply := controlRequest(t, ctl, `{"command":"metrics"}`)
			require.Equal(t, true, reply["ok"], "%v", reply)
			ctlText := []byte(reply["result"].(map[string]any)["text"].(string))
			cm := parseMetrics(t, ctlText)
			assert.Equal(t, 3.0, metricValue(t, cm, "one_socket_paired_total"))
			assert.Equal(t, 2.0, metricValue(t, cm, "one_socket_waiting", "mode", "none"))
			promtoolCheck(t, ctlText)

			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			if p, ok := strings.CutPrefix(addr, "unix:"); ok {
				_, err := os.Stat(p)
				assert.ErrorIs(t, err, os.ErrNotExist, "the metrics socket is removed at the stop")
			}
		})
	}
}

// TestMetricsListenFlag checks --metrics-listen's argument.
func TestMetricsListenFlag(t *testing.T) {
	for _, bad := range []string{"unix:", "localhost", "127.0.0.1"} {
		code, _, stderr := runDaemon(t, "--metrics-listen", bad)
		assert.Equal(t, 2, code, "%q: %s", bad, stderr)
		assert.Contains(t, stderr, "--metrics-listen", bad)
	}
}
