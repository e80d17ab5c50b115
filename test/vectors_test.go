package ctest

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The shared test vectors (libspbroker/testdata/vectors, see its README)
// through the C library: test/vectors.c makes the calls and prints what
// they returned; this test renders what the vectors say it must print and
// compares the two exactly, for each build of the library, and the builds'
// outputs with each other.

// vecOutcome is one API's expected result (vectors_gen_test.go's Outcome).
type vecOutcome struct {
	OK      bool   `json:"ok"`
	Errno   string `json:"errno"`
	Message string `json:"message"`
}

type vecMessage struct {
	Name     string      `json:"name"`
	Hex      string      `json:"hex"`
	Length   int         `json:"length"`
	NFDs     int         `json:"nfds"`
	Expected []uint32    `json:"expected"`
	C        *vecOutcome `json:"c"`
}

type vecStep struct {
	Do        string      `json:"do"`
	Path      string      `json:"path"`
	Nonblock  bool        `json:"nonblock"`
	Key       string      `json:"key"`
	Mode      string      `json:"mode"`
	Hex       string      `json:"hex"`
	FDs       int         `json:"fds"`
	Remaining int         `json:"remaining"`
	Read      bool        `json:"read"`
	Pipes     bool        `json:"pipes"`
	C         *vecOutcome `json:"c"`
}

type vecScenario struct {
	Name  string    `json:"name"`
	Steps []vecStep `json:"steps"`
}

type vecArgument struct {
	Name string     `json:"name"`
	C    vecOutcome `json:"c"`
}

var vecErrnos = map[string]unix.Errno{
	"EPROTO": unix.EPROTO, "EINVAL": unix.EINVAL, "ENOENT": unix.ENOENT,
	"ECONNREFUSED": unix.ECONNREFUSED, "ECONNRESET": unix.ECONNRESET,
	"EPIPE": unix.EPIPE, "EAGAIN": unix.EAGAIN, "ETIMEDOUT": unix.ETIMEDOUT,
	"EBADF": unix.EBADF, "ENOTSOCK": unix.ENOTSOCK,
}

func vectorsPath(name string) string {
	return filepath.Join(repoRoot, "libspbroker", "testdata", "vectors", name)
}

// outcomeLine renders what vectors.c prints for a call op with outcome o;
// withErr is false for a call made with err NULL.
func outcomeLine(t *testing.T, op string, o *vecOutcome, dir string, withErr bool) string {
	if o.OK {
		return op + " ok\n"
	}
	en, ok := vecErrnos[o.Errno]
	require.True(t, ok, "unknown errno %q", o.Errno)
	msg := strings.ReplaceAll(o.Message, "{dir}", dir)
	if !withErr {
		msg = "(no err)"
	}
	return fmt.Sprintf("%s fail %d %s\n", op, int(en), msg)
}

func hexKey(k string) string {
	if k == "" {
		return "-"
	}
	return hex.EncodeToString([]byte(k))
}

// vectorScript returns vectors.c's input for every vector C has, and the
// output it must print.
func vectorScript(t *testing.T, dirs string) (in, want string, counts [3]int) {
	var msgs struct{ Messages []vecMessage }
	var socks struct {
		Scenarios []vecScenario
		Arguments []vecArgument
	}
	for name, v := range map[string]any{"messages.json": &msgs, "sockets.json": &socks} {
		b, err := os.ReadFile(vectorsPath(name))
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(b, v), name)
	}
	var i, w strings.Builder
	for _, m := range msgs.Messages {
		if m.C == nil {
			continue // a length C cannot express: Go and Python only
		}
		b, err := hex.DecodeString(m.Hex)
		require.NoError(t, err)
		b = append(b, make([]byte, m.Length-len(b))...)
		exp := "-"
		if m.Expected != nil {
			exp = "e"
			if len(m.Expected) > 0 {
				var s []string
				for _, r := range m.Expected {
					s = append(s, fmt.Sprint(r))
				}
				exp = strings.Join(s, ",")
			}
		}
		fmt.Fprintf(&i, "M %s %d %s %s\n", m.Name, m.NFDs, exp, hex.EncodeToString(b))
		w.WriteString("M " + m.Name + " " + outcomeLine(t, "validate", m.C, "", true))
		counts[0]++
	}
	for n, sc := range socks.Scenarios {
		dir := filepath.Join(dirs, fmt.Sprint(n))
		require.NoError(t, os.Mkdir(dir, 0o755))
		fmt.Fprintf(&i, "S %s %s\n", sc.Name, dir)
		w.WriteString("S " + sc.Name + "\n")
		for _, st := range sc.Steps {
			if st.C == nil && strings.Contains(" connect get_pair send_get_pair receive_set_pair ", " "+st.Do+" ") {
				continue // a call C cannot make
			}
			switch st.Do {
			case "bind", "listen":
				fmt.Fprintf(&i, "%s %s\n", st.Do, st.Path)
			case "connect":
				nb := 0
				if st.Nonblock {
					nb = 1
				}
				fmt.Fprintf(&i, "connect %s %d\n", st.Path, nb)
				w.WriteString(outcomeLine(t, "connect", st.C, dir, true))
			case "get_pair":
				fmt.Fprintf(&i, "get_pair %s %s %s\n", st.Path, st.Mode, hexKey(st.Key))
				w.WriteString(outcomeLine(t, "get_pair", st.C, dir, true))
				if st.C.OK {
					w.WriteString("peer ok\n")
				}
			case "serve":
				read := 0
				if st.Read {
					read = 1
				}
				h := st.Hex
				if h == "" {
					h = "-"
				}
				fmt.Fprintf(&i, "serve %s %d %d %s\n", st.Path, read, st.FDs, h)
			case "served":
				i.WriteString("served\n")
				fmt.Fprintf(&w, "served %s\n", st.Hex)
			case "send_get_pair":
				fmt.Fprintf(&i, "send %s %s\n", st.Mode, hexKey(st.Key))
				w.WriteString(outcomeLine(t, "send", st.C, dir, true))
			case "receive_set_pair":
				i.WriteString("recv\n")
				w.WriteString(outcomeLine(t, "recv", st.C, dir, true))
				if st.C.OK {
					w.WriteString("peer ok\n")
				}
				fmt.Fprintf(&w, "left %d\n", st.Remaining)
			case "set_nonblock":
				i.WriteString("nonblock\n")
			case "broker_write":
				p := ""
				if st.Pipes {
					p = "p"
				}
				fmt.Fprintf(&i, "bwrite %s%d %s\n", p, st.FDs, st.Hex)
			case "broker_read":
				i.WriteString("bread\n")
				fmt.Fprintf(&w, "bread %s\n", st.Hex)
			case "broker_close":
				i.WriteString("bclose\n")
			default:
				t.Fatalf("%s: unknown step %q", sc.Name, st.Do)
			}
		}
		i.WriteString("E\n")
		w.WriteString("E\n")
		counts[1]++
	}
	for _, a := range socks.Arguments {
		fmt.Fprintf(&i, "A %s\n", a.Name)
		w.WriteString("S " + a.Name + "\n")
		w.WriteString("A " + a.Name + " " + outcomeLine(t, "call", &a.C, "", a.C.Message != ""))
		w.WriteString("E\n")
		counts[2]++
	}
	return i.String(), w.String(), counts
}

// TestVectors runs the vectors through vectors.c linked, through
// pkg-config from a meson install, with the Go c-archive (spbroker: in the
// process that loaded it, and in a child forked after a first call, which
// the archive serves from its C path) and with the runtime-free archive
// (spbroker-c). Each build must print exactly
// what the vectors say, and so all builds print the same bytes.
func TestVectors(t *testing.T) {
	t.Parallel()
	type build struct {
		lib  func(*testing.T) lib
		fork bool // run in a child forked after a first call
	}
	builds := []build{
		{lib: goArchive},
		{lib: goArchive, fork: true},
		{lib: func(t *testing.T) lib { return cArchive(t, false) }},
	}
	// One directory, so that paths in the output are the same for every
	// build; the builds run one after the other.
	dirs := tempDir(t)
	in, want, counts := vectorScript(t, dirs)
	t.Logf("%d messages, %d socket scenarios, %d argument cases", counts[0], counts[1], counts[2])
	outputs := map[string]string{}
	var first string
	for _, b := range builds {
		l := b.lib(t)
		prog := program(t, l, "vectors")
		var args []string
		if b.fork {
			args = []string{"--fork"}
			l.name += " (in a forked child)"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, prog, args...)
		cmd.Env = append(os.Environ(), l.env...)
		cmd.Stdin = strings.NewReader(in)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		require.NoError(t, err, "%s: vectors.c: %s", l.name, stderr.String())
		require.Empty(t, stderr.String(), "%s: vectors.c wrote to stderr", l.name)
		got := stdout.String()
		outputs[l.name] = got
		if first == "" {
			first = l.name
		}
		if got != want {
			t.Errorf("%s: vectors.c's output differs from the vectors:\n%s", l.name, lineDiff(want, got))
		}
	}
	for name, out := range outputs {
		if out != outputs[first] {
			t.Errorf("%s and %s print different results:\n%s", first, name, lineDiff(outputs[first], out))
		}
	}
}

// lineDiff lists the lines where got differs from want, with the name of
// the vector they belong to.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	section := ""
	n := 0
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if strings.HasPrefix(w, "S ") {
			section = w
		}
		if w != g {
			fmt.Fprintf(&b, "  [%s] line %d\n    want %q\n    got  %q\n", section, i+1, w, g)
			if n++; n == 40 {
				b.WriteString("  ...\n")
				break
			}
		}
	}
	return b.String()
}
