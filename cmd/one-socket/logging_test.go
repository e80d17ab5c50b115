package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/paths"
	"github.com/one-socket/one-socket/internal/testutil"
	spb "github.com/one-socket/one-socket/libspbroker"
)

// TestJournalHandler gives each line the priority of its record, also
// through a handler with attributes and a group, and only the line's own.
func TestJournalHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(newLogHandler(&buf, logFormatText, true, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Debug("d")
	log.With("a", 1).Info("i")
	log.WithGroup("g").Warn("w", "b", 2)
	log.Error("e")
	log.Log(context.Background(), slog.LevelError+4, "beyond")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	require.Len(t, lines, 5, buf.String())
	for i, want := range []string{"<7>", "<6>", "<4>", "<3>", "<3>"} {
		assert.True(t, strings.HasPrefix(lines[i], want+"time="), "line %d: %q", i, lines[i])
	}
	assert.Contains(t, lines[1], "a=1")
	assert.Contains(t, lines[2], "g.b=2")

	buf.Reset()
	slog.New(newLogHandler(&buf, logFormatJSON, true, nil)).Warn("w")
	assert.True(t, strings.HasPrefix(buf.String(), `<4>{"time":`), buf.String())
	buf.Reset()
	slog.New(newLogHandler(&buf, logFormatJSON, false, nil)).Warn("w")
	assert.True(t, strings.HasPrefix(buf.String(), `{"time":`), buf.String())
}

// TestLogFormatFlag refuses a format it does not know.
func TestLogFormatFlag(t *testing.T) {
	code, _, stderr := runDaemon(t, "--log-format", "xml")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `--log-format must be text or json, not "xml"`)
}

// TestLogFormatJSON runs the daemon with --log-format json, on standard
// error and in --log-file: every line is a JSON object with time, level
// and msg, and the fields of the text format as members.
func TestLogFormatJSON(t *testing.T) {
	t.Run("stderr", func(t *testing.T) {
		sock := sockPath(t)
		d := startDaemon(t, sock, "--log-format", "json", "--log-level", "debug")
		pairOnce(t, sock)
		waitFor(t, func() bool { return strings.Contains(d.stderr.String(), `"msg":"paired"`) })
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		checkJSONLog(t, d.stderr.String(), sock)
	})
	t.Run("log-file", func(t *testing.T) {
		sock := sockPath(t)
		logPath := filepath.Join(t.TempDir(), "one-socket.log")
		d := startDaemon(t, sock, "--log-format", "json", "--log-file", logPath)
		pairOnce(t, sock)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		assert.Empty(t, d.stderr.String())
		data, err := os.ReadFile(logPath)
		require.NoError(t, err)
		checkJSONLog(t, string(data), sock)
	})
}

// checkJSONLog parses log line by line and checks its start and stop
// lines.
func checkJSONLog(t *testing.T, log, sock string) {
	t.Helper()
	byMsg := map[string]map[string]any{}
	for line := range strings.SplitSeq(strings.TrimSuffix(log, "\n"), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "line %q", line)
		for _, k := range []string{"time", "level", "msg"} {
			require.Contains(t, rec, k, "line %q", line)
		}
		byMsg[rec["msg"].(string)] = rec
	}
	started := byMsg["one-socket started"]
	require.NotNil(t, started, log)
	assert.Equal(t, "INFO", started["level"])
	assert.Equal(t, sock, started["socket"])
	assert.Equal(t, "0660", started["mode"])
	stopped := byMsg["one-socket stopped"]
	require.NotNil(t, stopped, log)
	assert.EqualValues(t, 1, stopped["paired"])
	assert.Equal(t, "terminated", stopped["reason"])
}

// waitFor polls cond for up to 15 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// journalDaemon starts the daemon with standard error on a file and
// $JOURNAL_STREAM set by stream from the file's device and inode, as
// systemd sets it for a service whose output goes to the journal.
func journalDaemon(t *testing.T, sock string, stream func(dev, ino uint64) string, args ...string) (*daemon, *os.File) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	var st syscall.Stat_t
	require.NoError(t, syscall.Fstat(int(f.Fd()), &st))
	cmd := exec.Command(daemonBin, append([]string{"--socket", sock}, args...)...)
	cmd.Env = daemonEnv("JOURNAL_STREAM=" + stream(uint64(st.Dev), st.Ino))
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	d := &daemon{t: t, path: sock, cmd: cmd}
	d.done = testutil.StartProc(t, "one-socket", cmd).Done()
	d.waitAccepting()
	return d, f
}

// TestJournalPrefix: with standard error the journal's stream, each line
// starts with its syslog priority, a denial's with <4>; with
// $JOURNAL_STREAM naming another stream, or the log in --log-file, no
// line has one.
func TestJournalPrefix(t *testing.T) {
	policyPath := filepath.Join(t.TempDir(), "policy.conf")
	writePolicy(t, policyPath, "allow key=ok\n")
	deny := func(t *testing.T, sock string) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := getPair(ctx, sock, []byte("not-ok"), spb.ModeClient)
		require.Error(t, err)
	}
	same := func(dev, ino uint64) string { return fmt.Sprintf("%d:%d", dev, ino) }
	other := func(dev, ino uint64) string { return fmt.Sprintf("%d:%d", dev, ino+1) }
	read := func(t *testing.T, f *os.File, d *daemon, want string) []string {
		t.Helper()
		var lines []string
		waitFor(t, func() bool {
			data, err := os.ReadFile(f.Name())
			require.NoError(t, err)
			lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			return strings.Contains(string(data), want)
		})
		return lines
	}

	t.Run("journal", func(t *testing.T) {
		for _, format := range []string{logFormatText, logFormatJSON} {
			sock := sockPath(t)
			d, f := journalDaemon(t, sock, same, "--policy", policyPath, "--log-format", format)
			deny(t, sock)
			require.Equal(t, 0, d.stop(syscall.SIGTERM))
			lines := read(t, f, d, "one-socket stopped")
			var sawDenial bool
			for _, l := range lines {
				switch {
				case strings.Contains(l, "request denied"):
					sawDenial = true
					assert.True(t, strings.HasPrefix(l, "<4>"), "%s: %q", format, l)
				case strings.Contains(l, "one-socket started"), strings.Contains(l, "one-socket stopped"):
					assert.True(t, strings.HasPrefix(l, "<6>"), "%s: %q", format, l)
				default:
					assert.Regexp(t, `^<[3467]>`, l)
				}
				if format == logFormatJSON {
					var rec map[string]any
					assert.NoError(t, json.Unmarshal([]byte(l[3:]), &rec), "%q", l)
				}
			}
			assert.True(t, sawDenial, "%s: no denial in %q", format, lines)
		}
	})
	t.Run("other stream", func(t *testing.T) {
		sock := sockPath(t)
		d, f := journalDaemon(t, sock, other, "--policy", policyPath)
		deny(t, sock)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		for _, l := range read(t, f, d, "one-socket stopped") {
			assert.True(t, strings.HasPrefix(l, "time="), "%q", l)
		}
	})
	t.Run("log-file", func(t *testing.T) {
		sock := sockPath(t)
		logPath := filepath.Join(t.TempDir(), "one-socket.log")
		d, _ := journalDaemon(t, sock, same, "--policy", policyPath, "--log-file", logPath)
		deny(t, sock)
		require.Equal(t, 0, d.stop(syscall.SIGTERM))
		data, err := os.ReadFile(logPath)
		require.NoError(t, err)
		assert.Contains(t, string(data), "request denied")
		for l := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
			assert.True(t, strings.HasPrefix(l, "time="), "%q", l)
		}
	})
}

// TestRefusalLines: a policy denial, a request over the per-user quota and
// a connection over the limit each log the client's pid, uid and gid, and
// the key where there is one.
func TestRefusalLines(t *testing.T) {
	self := fmt.Sprintf("pid=%d uid=%d gid=%d ", os.Getpid(), os.Getuid(), os.Getgid())
	ask := func(t *testing.T, sock, key string) error {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := getPair(ctx, sock, []byte(key), spb.ModeClient)
		return err
	}
	t.Run("denial", func(t *testing.T) {
		policyPath := filepath.Join(t.TempDir(), "policy.conf")
		writePolicy(t, policyPath, "allow key=ok\n")
		sock := sockPath(t)
		d := startDaemon(t, sock, "--policy", policyPath)
		require.Error(t, ask(t, sock, "not ok"))
		line := d.waitLog("request denied")
		assert.Contains(t, line, "level=WARN ")
		assert.Contains(t, line, self)
		assert.Contains(t, line, `key=not\x20ok `)
	})
	t.Run("denial json", func(t *testing.T) {
		policyPath := filepath.Join(t.TempDir(), "policy.conf")
		writePolicy(t, policyPath, "allow key=ok\n")
		sock := sockPath(t)
		d := startDaemon(t, sock, "--policy", policyPath, "--log-format", "json")
		require.Error(t, ask(t, sock, "not ok"))
		waitFor(t, func() bool { return strings.Contains(d.stderr.String(), `"msg":"request denied"`) })
		for line := range strings.SplitSeq(d.stderr.String(), "\n") {
			if !strings.Contains(line, `"msg":"request denied"`) {
				continue
			}
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
			t.Log(line)
			assert.Equal(t, "WARN", rec["level"])
			assert.EqualValues(t, os.Getpid(), rec["pid"])
			assert.EqualValues(t, os.Getuid(), rec["uid"])
			assert.EqualValues(t, os.Getgid(), rec["gid"])
			assert.Equal(t, `not\x20ok`, rec["key"])
			assert.Equal(t, "client", rec["mode"])
			assert.NotEmpty(t, rec["reason"])
		}
	})
	t.Run("quota", func(t *testing.T) {
		sock := sockPath(t)
		d := startDaemon(t, sock, "--max-waiting-per-uid", "1")
		conn, err := net.Dial("unix", sock)
		require.NoError(t, err)
		defer conn.Close()
		_, err = conn.Write(getPairWire([]byte("first"), spb.ModeClient))
		require.NoError(t, err)
		waitFor(t, func() bool {
			return status(t, filepath.Join(filepath.Dir(sock), paths.ControlSocketName))["waiting"] == float64(1)
		})
		require.Error(t, ask(t, sock, "second"))
		line := d.waitLog("request refused: the user has too many clients waiting")
		assert.Contains(t, line, "level=WARN ")
		assert.Contains(t, line, self)
		assert.Contains(t, line, "mode=client key=second limit=1")
	})
	t.Run("connection limit", func(t *testing.T) {
		sock := sockPath(t)
		d := startDaemon(t, sock, "--max-conns", "1", "--max-conns-per-uid", "-1")
		ctl := filepath.Join(filepath.Dir(sock), paths.ControlSocketName)
		// startDaemon's probe of the socket must be gone first, or it
		// takes the one place and this connection is the one refused.
		waitFor(t, func() bool { return status(t, ctl)["conns"] == float64(0) })
		conn, err := net.Dial("unix", sock)
		require.NoError(t, err)
		defer conn.Close()
		waitFor(t, func() bool { return status(t, ctl)["conns"] == float64(1) })
		_ = ask(t, sock, "refused")
		line := d.waitLog("refusing connections: connection limit reached")
		assert.Contains(t, line, "level=WARN ")
		assert.Contains(t, line, self)
		assert.Contains(t, line, "limit=1 refused_since_last_warning=1")
	})
}

// TestLogFormatJSONUpgrade upgrades a daemon started with --log-format
// json: the new program writes JSON too, its upgraded line with what it
// took over.
func TestLogFormatJSONUpgrade(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "one.socket"), filepath.Join(dir, "ctl.socket")
	d := spawnAt(t, copyDaemon(t, dir), sock, "--ctl-socket", ctl, "--log-format", "json")
	ws := startWaiters(t, sock, 3)
	waitWaiting(t, ctl, 3)
	require.NoError(t, syscall.Kill(d.pid(), syscall.SIGUSR2))
	waitFor(t, func() bool { return strings.Contains(d.stderr.String(), `"msg":"upgraded"`) })
	pairWaiters(t, sock, ws)
	require.Equal(t, 0, d.stop(syscall.SIGTERM))
	var upgraded map[string]any
	for line := range strings.SplitSeq(strings.TrimSuffix(d.stderr.String(), "\n"), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "line %q", line)
		if rec["msg"] == "upgraded" {
			upgraded = rec
		}
	}
	require.NotNil(t, upgraded)
	assert.EqualValues(t, 3, upgraded["clients"])
	assert.EqualValues(t, 3, upgraded["waiting"])
	assert.EqualValues(t, 0, upgraded["kept"])
	assert.Equal(t, "carried", upgraded["counters"])
	assert.Equal(t, "none", upgraded["policy"])
}
