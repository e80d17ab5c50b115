package main

import (
	"github.com/one-socket/one-socket/internal/control"
)

// startControl serves the control protocol (internal/control) for the
// running broker on d.ctlLn, if the daemon has a control socket. Its stop
// command begins the same stop as SIGTERM, and its log-level command sets
// the level of the daemon's logger.
func (d *instance) startControl() {
	if d.ctlLn == nil {
		return
	}
	d.ctl = control.NewServer(control.BrokerHandler(d.b, control.DaemonInfo{
		Version:       versionString(),
		Socket:        d.brokerPath,
		ControlSocket: d.ctlPath,
		Start:         d.started,
		Level:         d.level,
		Stop:          d.requestStop,
		Reload:        func() (string, error) { return d.reloadPolicy("control") },
		Policy:        d.policy.current,
		Upgrade:       d.requestUpgrade,
	}), d.log)
	ln := d.ctlLn
	d.ctlLn = nil // the server owns it now
	d.ctlListener = ln
	d.ctlServed = make(chan error, 1)
	go func() { d.ctlServed <- d.ctl.Serve(ln) }()
}
