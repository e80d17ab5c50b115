package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
)

// daemonVersion is linked into the daemon under test.
const daemonVersion = "v0.0.0-daemon-for-ctl"

var (
	daemonOnce sync.Once
	daemonBin  string
	daemonErr  error
)

// buildDaemon builds cmd/one-socket once, for the tests that need it.
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonOnce.Do(func() {
		bin := filepath.Join(binDir, "one-socket")
		if daemonErr = testutil.Build(bin, &testutil.BuildOptions{Version: daemonVersion}, "../one-socket"); daemonErr == nil {
			daemonBin = bin
		}
	})
	require.NoError(t, daemonErr, "building the daemon")
	return daemonBin
}

// TestIntegrationDaemon runs every command against the real daemon, with
// its control socket where both find it by default: beside the broker
// socket.
func TestIntegrationDaemon(t *testing.T) {
	bin := buildDaemon(t)
	dir := shortTempDir(t)
	sock := filepath.Join(dir, "one.socket")
	ctlPath := filepath.Join(dir, "one-socket.ctl")
	metricsSock := filepath.Join(dir, "m.sock")
	daemon := exec.Command(bin, "--socket", sock, "--metrics-listen", "unix:"+metricsSock)
	daemon.Env = testEnv()
	var logs testutil.LockedBuffer
	daemon.Stderr = &logs
	require.NoError(t, daemon.Start())
	exited := make(chan struct{})
	go func() {
		daemon.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			daemon.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("one-socket's log:\n%s", logs.String())
		}
	})
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := control.Call(ctx, ctlPath, control.Request{Command: "status"})
		return err == nil
	}, waitFor, 10*time.Millisecond, "the daemon's control socket never answered")

	env := testEnv("ONE_SOCKET_PATH=" + sock)
	r := run(t, env, "", "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var st control.Status
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, daemonVersion, st.Version)
	assert.Equal(t, daemon.Process.Pid, st.PID)
	assert.Equal(t, sock, st.Socket)
	assert.Equal(t, ctlPath, st.ControlSocket)
	assert.Equal(t, result{stdout: "one-socketctl " + testVersion + "\none-socket " + daemonVersion + "\n"}, run(t, env, "", "version"))
	assert.Equal(t, result{stdout: "debug\n"}, run(t, env, "", "log-level", "debug"))
	assert.Equal(t, "none", st.Policy)
	assert.Equal(t, result{stdout: "no policy configured\n"}, run(t, env, "", "reload"))
	r = run(t, env, "", "status")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, `\ndenied: +0\nover quota: +0\nexpired: +0\n`, r.stdout)
	assert.Regexp(t, `\npolicy: +none\n`, r.stdout)

	a := start(t, env, strings.NewReader("from a\n"), "pair", "daemon-key", "--mode", "server")
	require.Eventually(t, func() bool {
		return strings.Contains(run(t, env, "", "list").stdout, "daemon-key")
	}, waitFor, 10*time.Millisecond)
	r = run(t, env, "", "list")
	assert.Regexp(t, `\ndaemon-key +server +`, r.stdout)
	b := run(t, env, "from b\n", "pair", "daemon-key", "--mode", "client")
	assert.Equal(t, result{stdout: "from a\n"}, b)
	assert.Equal(t, 0, a.wait(), a.stderr.String())
	assert.Equal(t, "from b\n", a.stdout.String())

	// metrics: the pair is counted, and its wait observed.
	m := ctlMetrics(t, env)
	assert.Equal(t, 1.0, m["one_socket_paired_total"])
	assert.Equal(t, 1.0, m["one_socket_wait_seconds_count"])
	assert.Equal(t, 0.0, m["one_socket_upgrades_total"])
	assert.Equal(t, 1.0, m[`one_socket_build_info{goversion="`+runtime.Version()+`", version="`+daemonVersion+`"}`], "%v", m)
	assert.Equal(t, m, httpMetrics(t, metricsSock))

	// upgrade: the same process runs on, with the log level it had.
	assert.Equal(t, result{stdout: "one-socket is upgrading\n"}, run(t, env, "", "upgrade"))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "msg=upgraded ") },
		waitFor, 10*time.Millisecond, "no upgraded line")
	r = run(t, env, "", "status", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, daemon.Process.Pid, st.PID)
	assert.Equal(t, "debug", st.LogLevel)
	// The totals and the upgrade count are carried; the histogram is not;
	// the new program serves --metrics-listen again.
	m = ctlMetrics(t, env)
	assert.Equal(t, 1.0, m["one_socket_paired_total"])
	assert.Equal(t, 1.0, m["one_socket_upgrades_total"])
	assert.Equal(t, 0.0, m["one_socket_wait_seconds_count"])
	assert.Equal(t, m, httpMetrics(t, metricsSock))

	assert.Equal(t, result{stdout: "one-socket is stopping\n"}, run(t, env, "", "stop"))
	select {
	case <-exited:
		assert.Equal(t, 0, daemon.ProcessState.ExitCode())
	case <-time.After(waitFor):
		t.Fatal("the daemon did not stop")
	}
	assert.Contains(t, logs.String(), "control: stop requested")
	r = run(t, env, "", "status")
	assert.Equal(t, result{stderr: "one-socketctl: no control socket at " + ctlPath + ": is one-socket running?\n", code: 1}, r)
}

// samples parses Prometheus text with client_golang's parser into each
// sample's value, keyed by its name and labels as the text format writes
// them (histograms as _bucket, _sum and _count).
func samples(t *testing.T, text string) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err, "%s", text)
	out := map[string]float64{}
	for _, mf := range mfs {
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{Timestamp: model.Earliest}, mf)
		require.NoError(t, err)
		for _, s := range vec {
			out[s.Metric.String()] = float64(s.Value)
		}
	}
	return out
}

// ctlMetrics runs one-socketctl metrics and parses its output.
func ctlMetrics(t *testing.T, env []string) map[string]float64 {
	t.Helper()
	r := run(t, env, "", "metrics")
	require.Equal(t, 0, r.code, r.stderr)
	return samples(t, r.stdout)
}

// httpMetrics scrapes /metrics on the Unix socket at path.
func httpMetrics(t *testing.T, path string) map[string]float64 {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	var body []byte
	require.Eventually(t, func() bool {
		resp, err := c.Get("http://one-socket/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return err == nil && resp.StatusCode == http.StatusOK
	}, waitFor, 10*time.Millisecond, "no metrics at %s", path)
	return samples(t, string(bytes.TrimSpace(body))+"\n")
}
