package doc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
	"github.com/one-socket/one-socket/libspbroker"
)

// logSample is a line a document shows as one the daemon logs.
type logSample struct {
	rel  string // the document
	line int    // 1-based
	json bool   // a --log-format json line, not key=value text
	msg  string
	keys []string // in order
}

func (s logSample) format() string {
	if s.json {
		return "json"
	}
	return "text"
}

// logSamples returns every sample log line in the fenced blocks of
// README.md and doc/*.md: key=value text that starts with time= or level=
// and has a msg, or a JSON object with "msg". A sample that does not parse
// fails t.
func logSamples(t *testing.T) []logSample {
	t.Helper()
	var out []logSample
	for _, rel := range markdownFiles(t) {
		f := readMarkdown(t, repoRoot, rel)
		for _, b := range f.blocks {
			for i, l := range b.lines {
				l = strings.TrimSpace(l)
				s := logSample{rel: rel, line: b.first + i}
				var err error
				switch {
				case (strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "level=")) && strings.Contains(l, " msg="):
					s.keys, s.msg, err = textKeys(l)
				case strings.HasPrefix(l, "{") && strings.Contains(l, `"msg":`):
					s.json = true
					s.keys, s.msg, err = jsonKeys(l)
				default:
					continue
				}
				if err != nil {
					t.Errorf("%s:%d: a sample log line that does not parse: %v", rel, s.line, err)
					continue
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// textKeys returns the keys, in order, and the msg of a line as log/slog's
// text handler writes it: key=value pairs, a value quoted when it must be.
func textKeys(line string) (keys []string, msg string, err error) {
	for s := line; s != ""; {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \"") {
			return nil, "", fmt.Errorf("not key=value at %q", s)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, "", fmt.Errorf("key %s: %v", k, err)
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
			if rest != "" && rest[0] != ' ' {
				return nil, "", fmt.Errorf("key %s: text after the quoted value", k)
			}
			rest = strings.TrimPrefix(rest, " ")
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		keys = append(keys, k)
		if k == "msg" {
			msg = v
		}
		s = rest
	}
	return keys, msg, nil
}

// jsonKeys returns the keys, in order, and the msg of a JSON log line.
func jsonKeys(line string) (keys []string, msg string, err error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, "", fmt.Errorf("not a JSON object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, "", err
		}
		k := tok.(string) // an object's tokens alternate: a key, then a value
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, "", fmt.Errorf("key %s: %v", k, err)
		}
		if k == "msg" {
			if err := json.Unmarshal(v, &msg); err != nil {
				return nil, "", fmt.Errorf("msg: %v", err)
			}
		}
		keys = append(keys, k)
	}
	if _, err := dec.Token(); err != nil {
		return nil, "", err
	}
	if dec.More() {
		return nil, "", errors.New("text after the object")
	}
	return keys, msg, nil
}

// logDenied is the key of the request the runs have denied.
const logDenied = "db-7"

// sampleFlags are the flags, beyond --socket and --log-format, of the
// daemon whose lines a document's samples show, given the policy file that
// denies logDenied; a document not named here shows the daemon with
// --policy alone (whose start line has the keys of one without it).
var sampleFlags = map[string]func(policy string) []string{
	// As deploy/kubernetes/one-socket.yaml runs it, less --metrics-listen
	// (a fixed TCP port), and with a group the test may give the socket.
	"doc/kubernetes.md": func(policy string) []string {
		return []string{"--socket-mode=0660", fmt.Sprintf("--socket-group=%d", os.Getgid()),
			"--policy=" + policy, "--max-conns=4096", "--max-waiting-per-uid=64", "--max-wait=10m", "--log-level=info"}
	},
}

// The samples the documents must have, so that a parser that no longer
// finds them fails here instead of checking nothing.
var wantSamples = []struct{ rel, format, msg string }{
	{"doc/one-socket.md", "text", "one-socket started"},
	{"doc/one-socket.md", "text", "one-socket stopped"},
	{"doc/one-socket.md", "text", "upgraded"},
	{"doc/one-socket.md", "json", "request denied"},
	{"doc/kubernetes.md", "text", "one-socket started"},
}

// TestLogSamples checks every sample log line of the documents against the
// lines a real daemon writes: each has the same keys, in the same order,
// as the daemon's line with the same msg (values may differ). The daemon
// runs with the document's sampleFlags, in the sample's format: it starts,
// denies a request, upgrades itself in place and stops on SIGTERM.
func TestLogSamples(t *testing.T) {
	samples := logSamples(t)
	for _, w := range wantSamples {
		if !slices.ContainsFunc(samples, func(s logSample) bool { return s.rel == w.rel && s.format() == w.format && s.msg == w.msg }) {
			t.Errorf("%s: no %s sample log line with msg %q", w.rel, w.format, w.msg)
		}
	}
	runs := map[string][]logSample{} // by flags' document and format
	for _, s := range samples {
		run := s.rel
		if sampleFlags[run] == nil {
			run = ""
		}
		id := run + " " + s.format()
		real, ok := runs[id]
		if !ok {
			real = daemonLog(t, run, s.format())
			runs[id] = real
		}
		i := slices.IndexFunc(real, func(r logSample) bool { return r.msg == s.msg })
		if i < 0 {
			t.Errorf("%s:%d: the daemon this test runs logs no %q line, so the sample cannot be checked: make daemonLog produce one", s.rel, s.line, s.msg)
			continue
		}
		if !slices.Equal(s.keys, real[i].keys) {
			t.Errorf("%s:%d: the sample %q line has the keys\n\t%s\nbut the daemon's has\n\t%s",
				s.rel, s.line, s.msg, strings.Join(s.keys, " "), strings.Join(real[i].keys, " "))
		}
	}
}

// daemonLog runs the daemon with the flags sampleFlags gives doc (""
// for the default), logging in format, and returns its lines: it starts,
// denies a GET_PAIR for logDenied, upgrades itself in place and stops on
// SIGTERM.
func daemonLog(t *testing.T, doc, format string) []logSample {
	t.Helper()
	dir, err := os.MkdirTemp(workDir, "log")
	if err != nil {
		t.Fatal(err)
	}
	sock, ctl, policy := filepath.Join(dir, "one.socket"), filepath.Join(dir, "one-socket.ctl"), filepath.Join(dir, "policy.conf")
	if err := os.WriteFile(policy, []byte("allow key=doc-*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--policy=" + policy}
	if f := sampleFlags[doc]; f != nil {
		flags = f(policy)
	}
	cmd := exec.Command(filepath.Join(programs(t), "one-socket"), append([]string{"--socket", sock, "--log-format", format}, flags...)...)
	cmd.Env = daemonEnv()
	p := testutil.StartProc(t, "one-socket "+strings.Join(cmd.Args[1:], " "), cmd)
	lines := func() []logSample {
		var out []logSample
		for l := range strings.Lines(p.Log.String()) {
			l = strings.TrimSuffix(l, "\n")
			s := logSample{rel: "the daemon's log", json: format == "json"}
			var err error
			if s.json {
				s.keys, s.msg, err = jsonKeys(l)
			} else {
				s.keys, s.msg, err = textKeys(l)
			}
			if err != nil {
				t.Fatalf("the daemon logged a line that does not parse (%v): %s", err, l)
			}
			out = append(out, s)
		}
		return out
	}
	logged := func(msg string) bool {
		return slices.ContainsFunc(lines(), func(s logSample) bool { return s.msg == msg })
	}
	call := func(command string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := control.Call(ctx, ctl, control.Request{Command: command})
		return err
	}
	p.WaitFor(t, "the control socket", func() bool { return call("status") == nil })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := (&libspbroker.Config{NoRetry: true}).GetPair(ctx, sock, []byte(logDenied), libspbroker.ModeClient); err == nil {
		t.Fatalf("the policy allowed the key %s", logDenied)
	}
	p.WaitFor(t, "the denial's line", func() bool { return logged("request denied") })
	if err := call("upgrade"); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, p.Log.String())
	}
	p.WaitFor(t, "the upgraded line", func() bool { return logged("upgraded") })
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Err != nil {
		t.Fatalf("the daemon stopped with %v:\n%s", p.Err, p.Log.String())
	}
	return lines()
}

// daemonEnv is the test's environment less what would change where the
// daemon listens or how it logs (the journal's <N> prefix).
func daemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ONE_SOCKET_") || strings.HasPrefix(k, "LISTEN_") || k == "NOTIFY_SOCKET" || k == "JOURNAL_STREAM" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// The parsers take the lines apart as log/slog writes them, and refuse
// what it does not write.
func TestLogKeys(t *testing.T) {
	keys, msg, err := textKeys(`time=2026-01-02T10:00:00.000Z level=INFO msg="a b=c" policy="p: \"x\"" n=1 e=`)
	if err != nil || msg != "a b=c" || !slices.Equal(keys, []string{"time", "level", "msg", "policy", "n", "e"}) {
		t.Errorf("textKeys: %q %q %v", keys, msg, err)
	}
	for _, bad := range []string{`time=1 level`, `msg="open`, `msg="a"b`, `=1`} {
		if _, _, err := textKeys(bad); err == nil {
			t.Errorf("textKeys(%q) took it", bad)
		}
	}
	keys, msg, err = jsonKeys(`{"time":"t","msg":"m","o":{"x":1},"n":2}`)
	if err != nil || msg != "m" || !slices.Equal(keys, []string{"time", "msg", "o", "n"}) {
		t.Errorf("jsonKeys: %q %q %v", keys, msg, err)
	}
	for _, bad := range []string{`{"msg":1}`, `{"msg":"m"`, `{"msg":"m"} x`, `[]`} {
		if _, _, err := jsonKeys(bad); err == nil {
			t.Errorf("jsonKeys(%q) took it", bad)
		}
	}
}
