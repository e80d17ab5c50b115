package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/one-socket/one-socket/internal/metrics"
)

// metricsServer serves /metrics over HTTP for --metrics-listen.
type metricsServer struct {
	srv  *http.Server
	path string // the unix: socket's file, removed at close; "" for TCP
	done chan struct{}
}

// parseMetricsListen checks --metrics-listen: host:port, or unix:PATH.
func parseMetricsListen(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if p == "" {
			return "", "", errors.New("--metrics-listen unix: needs a path")
		}
		return "unix", p, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("--metrics-listen %q: want host:port or unix:PATH: %v", addr, err)
	}
	return "tcp", addr, nil
}

// startMetrics listens on --metrics-listen, if given, and serves the
// daemon's metrics at /metrics.
func (d *instance) startMetrics() error {
	if d.cfg.metricsListen == "" {
		return nil
	}
	network, address, err := parseMetricsListen(d.cfg.metricsListen)
	if err != nil {
		return err
	}
	if network == "unix" && !strings.HasPrefix(address, "@") {
		// A socket left by a previous run, or by this daemon before it
		// re-executed itself: only a socket is removed.
		if fi, err := os.Lstat(address); err == nil && fi.Mode().Type() == fs.ModeSocket {
			os.Remove(address)
		}
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	m := &metricsServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			WriteTimeout:      10 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    16 << 10,
		},
		done: make(chan struct{}),
	}
	if network == "unix" && !strings.HasPrefix(address, "@") {
		m.path = address
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
	}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("the metrics server failed", "err", err)
		}
	}()
	d.metricsSrv = m
	d.log.Info("serving metrics", "listen", d.cfg.metricsListen)
	return nil
}

// stopMetrics closes the metrics server, if any, and removes its socket
// file.
func (d *instance) stopMetrics() {
	m := d.metricsSrv
	if m == nil {
		return
	}
	m.srv.Close()
	<-m.done
	if m.path != "" {
		os.Remove(m.path)
	}
	d.metricsSrv = nil
}

// newMetrics is the daemon's metrics; it reports a broker from the first
// startControl on.
func newMetrics() *metrics.Metrics { return metrics.New(versionString()) }
