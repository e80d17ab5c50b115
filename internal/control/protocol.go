package control

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Limits of the server.
const (
	// MaxRequestSize is the longest request line accepted, in bytes, not
	// counting its newline.
	MaxRequestSize = 64 << 10

	// RequestTimeout is the time a client has, from its acceptance, to
	// send its whole request; the reply is also bounded by it.
	RequestTimeout = 5 * time.Second

	// MaxClients is the number of requests served at once. A client
	// beyond it gets an error reply at once.
	MaxClients = 16
)

// Command names.
const (
	CmdStatus   = "status"
	CmdList     = "list"
	CmdDrop     = "drop"
	CmdLogLevel = "log-level"
	CmdStop     = "stop"
	CmdReload   = "reload"
	CmdUpgrade  = "upgrade"
	CmdMetrics  = "metrics"
)

// Request is a control request. Key is sent in base64, as encoding/json
// writes a []byte.
type Request struct {
	Command string `json:"command"`
	Key     []byte `json:"key,omitempty"`   // drop: the key of the clients to disconnect
	Level   string `json:"level,omitempty"` // log-level: the new level; empty asks for the current one
}

// reply is the envelope of every answer.
type reply struct {
	OK     bool   `json:"ok"`
	Result any    `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Status is the result of "status": what the daemon is and its counters.
type Status struct {
	Version       string  `json:"version"`
	PID           int     `json:"pid"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	Socket        string  `json:"socket"`
	ControlSocket string  `json:"control_socket"`
	LogLevel      string  `json:"log_level"`

	MaxConns       int `json:"max_conns"`         // the broker's connection limit
	MaxConnsPerUID int `json:"max_conns_per_uid"` // each user's share of it, 0 for no cap
	Conns          int `json:"conns"`             // open client connections now
	Waiting        int `json:"waiting"`           // clients waiting for a peer now
	Kept           int `json:"kept"`              // waiting clients in systemd's store, for a crash (--fdstore)

	// Totals since the daemon started; see doc/one-socket.md, Logging.
	AcceptedTotal  uint64            `json:"accepted_total"`
	PairedTotal    uint64            `json:"paired_total"`
	RefusedTotal   uint64            `json:"refused_total"`
	TimedOutTotal  uint64            `json:"timed_out_total"`
	VanishedTotal  uint64            `json:"vanished_total"`
	ProtocolErrors map[string]uint64 `json:"protocol_errors"` // by kind

	DeniedTotal    uint64 `json:"denied_total"`     // requests the policy refused
	OverQuotaTotal uint64 `json:"over_quota_total"` // requests refused by --max-waiting-per-uid
	ExpiredTotal   uint64 `json:"expired_total"`    // waiters disconnected after --max-wait
	ShedTotal      uint64 `json:"shed_total"`       // handshakes closed to let another user in
	// RestoredTotal counts clients taken back after a crash whose request
	// was whole; StoreFailedTotal, calls to systemd's store that failed.
	RestoredTotal    uint64 `json:"restored_total"`
	StoreFailedTotal uint64 `json:"store_failed_total"`

	// Policy summarises the access policy in force, "none" without one.
	Policy string `json:"policy"`
}

// Waiter is one element of the result of "list": a client waiting for its
// peer.
type Waiter struct {
	Key           []byte  `json:"key"`                // the key's bytes (base64 in JSON)
	KeyText       string  `json:"key_text,omitempty"` // the key, when it is printable UTF-8
	KeyHex        string  `json:"key_hex"`            // the key in hexadecimal
	Mode          string  `json:"mode"`               // none, client or server
	WaitedSeconds float64 `json:"waited_seconds"`     // since its request was complete
	PID           int32   `json:"pid"`                // the client's credentials at connect time;
	UID           uint32  `json:"uid"`                // all zero if the kernel would not say
	GID           uint32  `json:"gid"`
}

// DropResult is the result of "drop".
type DropResult struct {
	Dropped int `json:"dropped"` // clients disconnected
}

// LevelResult is the result of "log-level": the level in force after the
// request.
type LevelResult struct {
	Level string `json:"level"`
}

// ReloadResult is the result of "reload": the summary of the policy in
// force after it, or "no policy configured".
type ReloadResult struct {
	Policy string `json:"policy"`
}

// UpgradeResult is the result of "upgrade": the new binary passed its
// check and the daemon is re-executing it.
type UpgradeResult struct {
	Upgrading bool `json:"upgrading"`
}

// MetricsResult is the result of "metrics": the daemon's metrics in the
// Prometheus text format, as --metrics-listen serves them.
type MetricsResult struct {
	Text string `json:"text"`
}

// StopResult is the result of "stop".
type StopResult struct {
	Stopping bool `json:"stopping"`
}

// ParseLevel parses a log level name: debug, info, warn (or warning) or
// error, in any case.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q: want debug, info, warn or error", s)
}

// LevelName returns the name ParseLevel reads for l: "debug", "info",
// "warn" or "error", or slog's lower-cased name (such as "info+2") for a
// level between them.
func LevelName(l slog.Level) string {
	return strings.ToLower(l.String())
}
