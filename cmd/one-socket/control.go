package main

import (
	"net"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/scm"
)

// controlServer is the daemon's control socket: its listener from the
// moment it exists, and the server once the broker runs.
type controlServer struct {
	ln     *net.UnixListener // nil without a control socket
	srv    *control.Server   // nil until startControl
	served chan error        // srv's Serve result; nil when it has been read
}

// startControl serves the control protocol (internal/control) for the
// running broker, if the daemon has a control socket. Its stop command
// begins the same stop as SIGTERM, and its log-level command sets the
// level of the daemon's logger.
//
// It also makes the metrics report the running broker, with or without a
// control socket.
func (d *instance) startControl() {
	d.metrics.SetBroker(d.b)
	if d.ctl.ln == nil {
		return
	}
	srv := control.NewServer(control.BrokerHandler(d.b, control.DaemonInfo{
		Version:       versionString(),
		Socket:        d.sock.path,
		ControlSocket: d.ctlSock.path,
		Start:         d.started,
		Level:         d.level,
		Stop:          d.requestStop,
		Reload:        func() (string, error) { return d.reloadPolicy("control") },
		Policy:        d.policy.current,
		Upgrade:       d.requestUpgrade,
		Metrics:       d.metrics.Text,
	}), d.log)
	srv.Allow(d.cfg.ctlAllow...)
	served := make(chan error, 1)
	ln := d.ctl.ln
	go func() { served <- srv.Serve(ln) }()
	d.ctl.srv, d.ctl.served = srv, served
}

// dup returns a duplicate of the control listener, owned by the caller,
// or -1 without one.
func (c *controlServer) dup() (int, error) {
	if c.ln == nil {
		return -1, nil
	}
	return scm.Dup(c.ln)
}

// close stops the server, if it runs, and closes the listener.
func (c *controlServer) close() {
	if c.srv != nil {
		c.srv.Close()
		if c.served != nil {
			<-c.served
		}
	} else if c.ln != nil {
		c.ln.Close()
	}
	c.ln, c.srv, c.served = nil, nil, nil
}
