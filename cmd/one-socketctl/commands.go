package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/paths"
)

// defaultTimeout bounds a control command's exchange without --timeout.
const defaultTimeout = 5 * time.Second

// controlPath decides which control socket to use: --ctl-socket, else
// $ONE_SOCKET_CTL_PATH, else the one beside the broker socket.
func (a *app) controlPath(o *options) (string, error) {
	broker, berr := paths.BrokerSocket(o.socket, a.getenv, a.euid)
	p := paths.ControlSocket(o.ctlSocket, broker, a.getenv)
	switch {
	case p != "":
		return p, nil
	case berr != nil:
		return "", fmt.Errorf("no control socket path: %v (or use --ctl-socket, or set %s)", berr, paths.EnvControlSocket)
	}
	return "", fmt.Errorf("no default control socket beside the abstract broker socket %s: use --ctl-socket PATH or set %s",
		broker, paths.EnvControlSocket)
}

// call sends req to the control socket and returns its result, or prints
// why it could not and returns ok == false.
func (a *app) call(o *options, req control.Request) (res json.RawMessage, ok bool) {
	path, err := a.controlPath(o)
	if err != nil {
		a.errorf("%v", err)
		return nil, false
	}
	timeout := cmp.Or(o.timeout, defaultTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err = control.Call(ctx, path, req)
	if err != nil {
		a.errorf("%s", describeControlError(err, path, timeout, o.command))
		return nil, false
	}
	return res, true
}

// describeControlError says in words why a control request failed.
func describeControlError(err error, path string, timeout time.Duration, command string) string {
	var se *control.ServerError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s: %s", command, se.Message)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("no answer from %s within %v", path, timeout)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("no control socket at %s: is one-socket running?", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nobody answers on %s", path)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Sprintf("no permission to connect to %s", path)
	}
	return err.Error()
}

func (a *app) errorf(format string, args ...any) {
	fmt.Fprintf(a.stderr, "one-socketctl: "+format+"\n", args...)
}

// printJSON prints a result as one line of compact JSON.
func (a *app) printJSON(res json.RawMessage) int {
	var buf bytes.Buffer
	if err := json.Compact(&buf, res); err != nil {
		a.errorf("malformed result from the broker: %v", err)
		return exitFailure
	}
	buf.WriteByte('\n')
	a.stdout.Write(buf.Bytes())
	return exitOK
}

// do sends req and prints its result: as it came with --json, else by
// decoding it into v and calling show.
func (a *app) do(o *options, req control.Request, v any, show func()) int {
	res, ok := a.call(o, req)
	if !ok {
		return exitFailure
	}
	if o.json {
		return a.printJSON(res)
	}
	if err := json.Unmarshal(res, v); err != nil {
		a.errorf("malformed result from the broker: %v", err)
		return exitFailure
	}
	show()
	return exitOK
}

func (a *app) status(o *options) int {
	var st control.Status
	return a.do(o, control.Request{Command: control.CmdStatus}, &st, func() { writeStatus(a.stdout, &st) })
}

// writeStatus prints a Status for people.
func writeStatus(w io.Writer, st *control.Status) {
	up := time.Duration(st.UptimeSeconds * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(w, "one-socket %s, pid %d, up %v\n", st.Version, st.PID, up)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k string, v any) { fmt.Fprintf(tw, "%s:\t%v\n", k, v) }
	line("broker socket", st.Socket)
	line("control socket", st.ControlSocket)
	line("log level", st.LogLevel)
	limit := fmt.Sprintf("limit %d", st.MaxConns)
	if st.MaxConnsPerUID > 0 {
		limit += fmt.Sprintf(", %d per user", st.MaxConnsPerUID)
	}
	line("connections", fmt.Sprintf("%d open, %d waiting, %s", st.Conns, st.Waiting, limit))
	line("accepted", st.AcceptedTotal)
	line("paired", st.PairedTotal)
	line("refused", st.RefusedTotal)
	line("shed", st.ShedTotal)
	line("timed out", st.TimedOutTotal)
	line("vanished", st.VanishedTotal)
	line("denied", st.DeniedTotal)
	line("over quota", st.OverQuotaTotal)
	line("expired", st.ExpiredTotal)
	if st.Kept > 0 || st.RestoredTotal > 0 || st.StoreFailedTotal > 0 {
		line("kept for a crash", fmt.Sprintf("%d now, %d taken back, %d store failures", st.Kept, st.RestoredTotal, st.StoreFailedTotal))
	}
	var total uint64
	var kinds []string
	for _, k := range slices.Sorted(maps.Keys(st.ProtocolErrors)) {
		if n := st.ProtocolErrors[k]; n > 0 {
			total += n
			kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		}
	}
	if total > 0 {
		line("protocol errors", fmt.Sprintf("%d (%s)", total, strings.Join(kinds, ", ")))
	} else {
		line("protocol errors", 0)
	}
	line("policy", cmp.Or(st.Policy, "none"))
	tw.Flush()
}

func (a *app) list(o *options) int {
	var ws []control.Waiter
	return a.do(o, control.Request{Command: control.CmdList}, &ws, func() { writeList(a.stdout, ws) })
}

// writeList prints waiting clients as a table; a key that is not
// printable text is shown as 0x and its hexadecimal digits.
func writeList(w io.Writer, ws []control.Waiter) {
	if len(ws) == 0 {
		fmt.Fprintln(w, "no clients waiting")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tMODE\tAGE\tPID\tUID\tGID")
	for _, c := range ws {
		key := c.KeyText
		if key == "" {
			key = "0x" + c.KeyHex
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", key, c.Mode, age(c.WaitedSeconds), c.PID, c.UID, c.GID)
	}
	tw.Flush()
}

// age writes a waiting time: tenths of a second under a minute, whole
// seconds beyond.
func age(seconds float64) string {
	if seconds < 60 {
		return fmt.Sprintf("%.1fs", seconds)
	}
	return time.Duration(seconds * float64(time.Second)).Round(time.Second).String()
}

func (a *app) drop(o *options) int {
	key, _ := o.key() // checked by parse
	var dr control.DropResult
	return a.do(o, control.Request{Command: control.CmdDrop, Key: key}, &dr, func() {
		plural := "s"
		if dr.Dropped == 1 {
			plural = ""
		}
		fmt.Fprintf(a.stdout, "dropped %d waiting client%s\n", dr.Dropped, plural)
	})
}

func (a *app) logLevel(o *options) int {
	level, _ := o.level() // checked by parse
	var lr control.LevelResult
	return a.do(o, control.Request{Command: control.CmdLogLevel, Level: level}, &lr, func() { fmt.Fprintln(a.stdout, lr.Level) })
}

func (a *app) reload(o *options) int {
	var rr control.ReloadResult
	return a.do(o, control.Request{Command: control.CmdReload}, &rr, func() { fmt.Fprintln(a.stdout, rr.Policy) })
}

func (a *app) upgrade(o *options) int {
	var ur control.UpgradeResult
	return a.do(o, control.Request{Command: control.CmdUpgrade}, &ur, func() { fmt.Fprintln(a.stdout, "one-socket is upgrading") })
}

// metrics prints the daemon's metrics as it rendered them.
func (a *app) metrics(o *options) int {
	var mr control.MetricsResult
	return a.do(o, control.Request{Command: control.CmdMetrics}, &mr, func() { io.WriteString(a.stdout, mr.Text) })
}

func (a *app) stop(o *options) int {
	var sr control.StopResult
	return a.do(o, control.Request{Command: control.CmdStop}, &sr, func() { fmt.Fprintln(a.stdout, "one-socket is stopping") })
}

// versions prints this tool's version, then the daemon's; it fails if the
// daemon does not answer.
func (a *app) versions(o *options) int {
	mine := versionString()
	if !o.json {
		fmt.Fprintf(a.stdout, "one-socketctl %s\n", mine)
	}
	res, ok := a.call(o, control.Request{Command: control.CmdStatus})
	if !ok {
		return exitFailure
	}
	var st control.Status
	if err := json.Unmarshal(res, &st); err != nil {
		a.errorf("malformed result from the broker: %v", err)
		return exitFailure
	}
	if o.json {
		out, _ := json.Marshal(map[string]string{"one_socketctl": mine, "one_socket": st.Version})
		return a.printJSON(out)
	}
	fmt.Fprintf(a.stdout, "one-socket %s\n", st.Version)
	return exitOK
}
