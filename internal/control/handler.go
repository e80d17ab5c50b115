package control

import (
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/one-socket/one-socket/internal/broker"
)

// DaemonInfo is what BrokerHandler needs to know about the daemon beyond
// its broker.
type DaemonInfo struct {
	Version       string
	Socket        string // the broker socket's path, as reported by status
	ControlSocket string // the control socket's path, as reported by status
	Start         time.Time

	// Level is the level of the daemon's log handler; "log-level" changes
	// it. nil makes the level unchangeable and unreported.
	Level *slog.LevelVar

	// Stop begins the daemon's graceful stop and returns at once; it must
	// not wait for the control server to close. The daemon must set it:
	// nil makes "stop" answer yes and do nothing.
	Stop func()

	// Reload rereads the access policy and returns its summary; "reload"
	// calls it. nil answers "no policy configured".
	Reload func() (string, error)

	// Upgrade checks the daemon's binary and begins the restart by
	// re-exec; "upgrade" calls it. nil refuses the upgrade.
	Upgrade func() error

	// Policy returns the summary of the policy in force for status; nil
	// reports "none".
	Policy func() string

	// Metrics renders the daemon's metrics in the Prometheus text format;
	// nil answers that the daemon has none.
	Metrics func() ([]byte, error)
}

// BrokerHandler returns a Handler that answers from b and info. b must be
// serving (or have stopped, when List and Drop fail with broker.ErrClosed).
func BrokerHandler(b *broker.Broker, info DaemonInfo) Handler {
	return &brokerHandler{b: b, info: info}
}

type brokerHandler struct {
	b    *broker.Broker
	info DaemonInfo
}

func (h *brokerHandler) Status() Status {
	s := h.b.Stats()
	st := Status{
		Version:          h.info.Version,
		PID:              os.Getpid(),
		UptimeSeconds:    time.Since(h.info.Start).Seconds(),
		Socket:           h.info.Socket,
		ControlSocket:    h.info.ControlSocket,
		MaxConns:         h.b.MaxConns(),
		MaxConnsPerUID:   h.b.MaxConnsPerUID(),
		Conns:            s.Conns,
		Waiting:          s.Waiting,
		Kept:             s.Kept,
		RestoredTotal:    s.Restored,
		StoreFailedTotal: s.StoreFailed,
		AcceptedTotal:    s.Accepted,
		PairedTotal:      s.Paired,
		RefusedTotal:     s.Refused,
		ShedTotal:        s.Shed,
		TimedOutTotal:    s.TimedOut,
		VanishedTotal:    s.Vanished,
		ProtocolErrors:   s.ProtocolErrorsByName(),
		DeniedTotal:      s.Denied,
		OverQuotaTotal:   s.OverQuota,
		ExpiredTotal:     s.Expired,
		Policy:           "none",
	}
	if h.info.Policy != nil {
		st.Policy = h.info.Policy()
	}
	if h.info.Level != nil {
		st.LogLevel = LevelName(h.info.Level.Level())
	}
	return st
}

func (h *brokerHandler) List() ([]Waiter, error) {
	ws, err := h.b.Waiting()
	if err != nil {
		return nil, err
	}
	out := make([]Waiter, len(ws))
	for i, w := range ws {
		out[i] = Waiter{
			Key:           w.Key,
			KeyText:       KeyText(w.Key),
			KeyHex:        hex.EncodeToString(w.Key),
			Mode:          w.Mode.String(),
			WaitedSeconds: w.Waited.Seconds(),
			PID:           w.PID,
			UID:           w.UID,
			GID:           w.GID,
		}
	}
	return out, nil
}

func (h *brokerHandler) Drop(key []byte) (int, error) {
	return h.b.Drop(key)
}

func (h *brokerHandler) SetLogLevel(level string) error {
	if h.info.Level == nil {
		return errors.New("the log level cannot be changed")
	}
	l, err := ParseLevel(level)
	if err != nil {
		return err
	}
	h.info.Level.Set(l)
	return nil
}

func (h *brokerHandler) Reload() (string, error) {
	if h.info.Reload == nil {
		return "no policy configured", nil
	}
	return h.info.Reload()
}

func (h *brokerHandler) Upgrade() error {
	if h.info.Upgrade == nil {
		return errors.New("this daemon cannot upgrade")
	}
	return h.info.Upgrade()
}

func (h *brokerHandler) Metrics() (string, error) {
	if h.info.Metrics == nil {
		return "", errors.New("this daemon has no metrics")
	}
	b, err := h.info.Metrics()
	return string(b), err
}

func (h *brokerHandler) Stop() {
	if h.info.Stop != nil {
		h.info.Stop()
	}
}
