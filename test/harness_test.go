package ctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// The harness builds everything once, on first use, into one temporary
// directory: the daemon; the meson installs (mesonConfigs), which hold
// every archive the tests link, the Go c-archive and the runtime-free one
// plain and with sanitizers; and the C test programs linked against each
// with the flags pkg-config gives. A build that fails fails every test
// that needs it, with the compiler's output.

var (
	// repoRoot is the module's root directory, the parent of test/.
	repoRoot string
	// workDir holds every build product; TestMain removes it.
	workDir string
)

func TestMain(m *testing.M) {
	// Short: socket paths under it must fit in sun_path's 108 bytes.
	os.Exit(testutil.RepoMain(m, "ctest", "spbc", func(root, work string) error {
		repoRoot, workDir = root, work
		return nil
	}))
}

// tools names, for each command the suite runs, the Debian package that
// provides it.
var tools = map[string]string{
	"go":         "golang (or Go from go.dev at /usr/local/go)",
	"cc":         "gcc libc6-dev",
	"c++":        "g++",
	"meson":      "meson",
	"ninja":      "ninja-build",
	"pkg-config": "pkg-config",
	"valgrind":   "valgrind",
	"ld.bfd":     "binutils",
	"ld.gold":    "binutils",
	"ld.lld":     "lld",
}

// requireTool fails the test unless name is on PATH and returns its path.
// A missing tool is a failure, never a skip: the checks it serves would
// otherwise silently not run.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed, and the C library's tests need it: apt-get install %s (.ci/run does): %v",
			name, tools[name], err)
	}
	return p
}

// buildSlots bounds the compilers and linkers running at once: the
// machine has two cores.
var buildSlots = make(chan struct{}, 2)

// runBuild runs one build command in dir and returns its error with its
// output.
func runBuild(dir string, env []string, name string, args ...string) error {
	buildSlots <- struct{}{}
	defer func() { <-buildSlots }()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// memoEntry is one build product, made once and shared by every test.
type memoEntry struct {
	done chan struct{}
	val  string
	err  error
}

var (
	memoMu sync.Mutex
	memo   = map[string]*memoEntry{}
)

// once makes the product called key with build on first use, and returns
// it (or fails t with build's error) on every use.
func once(t *testing.T, key string, build func() (string, error)) string {
	t.Helper()
	memoMu.Lock()
	e, ok := memo[key]
	if !ok {
		e = &memoEntry{done: make(chan struct{})}
		memo[key] = e
	}
	memoMu.Unlock()
	if !ok {
		func() {
			defer close(e.done)
			e.val, e.err = build()
		}()
	} else {
		<-e.done
	}
	if e.err != nil {
		t.Fatalf("building %s: %v", key, e.err)
	}
	return e.val
}

// daemonBin builds cmd/one-socket.
func daemonBin(t *testing.T) string {
	requireTool(t, "go")
	return once(t, "one-socket", func() (string, error) {
		buildSlots <- struct{}{}
		defer func() { <-buildSlots }()
		out := filepath.Join(workDir, "bin", "one-socket")
		return out, testutil.Build(out, &testutil.BuildOptions{Dir: repoRoot}, "./cmd/one-socket")
	})
}

// lib is one build of libspbroker as a C program links it.
type lib struct {
	name   string
	cflags []string
	libs   []string
	env    []string // for running programs linked with it
}

// Every archive the tests link is one that meson.build built and ninja
// installed into a prefix of the harness's: the tests take it with the
// flags that pkg-config gives for its installed .pc file, as any host
// would, so the archive built here is the one users get. These are the
// configurations, each installed once, on first use.
var mesonConfigs = map[string][]string{
	// The default build: libspbroker.a is the Go c-archive (package
	// spbroker), libspbroker-c.a the runtime-free one (spbroker-c).
	"default": nil,
	// A build without Go: both archives are the runtime-free one.
	// Warnings are errors here, as with a distribution's strict flags.
	"nogo": {"-Dgo_runtime=false", "--werror"},
	// The runtime-free archive compiled with ASan and UBSan (and no Go,
	// which is not built with them).
	"asan": {"-Dgo_runtime=false", "--werror", "-Db_sanitize=address,undefined", "--buildtype=plain",
		"-Dc_args=-O1 -g -fno-omit-frame-pointer -fno-sanitize-recover=all"},
}

// mesonInstall configures the repository with meson in the named
// configuration of mesonConfigs (always without the daemon, which the
// tests build themselves) and installs it into a fresh prefix with ninja;
// it returns the directory of the installed .pc files.
func mesonInstall(t *testing.T, config string) string {
	requireTool(t, "meson")
	requireTool(t, "ninja")
	requireTool(t, "cc")
	args, ok := mesonConfigs[config]
	if !ok {
		t.Fatalf("no meson configuration called %q", config)
	}
	if !slices.Contains(args, "-Dgo_runtime=false") {
		requireTool(t, "go")
	}
	name := "meson-" + config
	return once(t, name, func() (string, error) {
		build := filepath.Join(workDir, name, "build")
		prefix := filepath.Join(workDir, name, "prefix")
		setup := append([]string{"setup", build, repoRoot, "--prefix", prefix, "-Ddaemon=disabled"}, args...)
		if err := runBuild(repoRoot, nil, "meson", setup...); err != nil {
			return "", err
		}
		if err := runBuild(repoRoot, nil, "ninja", "-C", build, "install"); err != nil {
			return "", err
		}
		var pcDir string
		err := filepath.WalkDir(prefix, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "spbroker.pc" {
				pcDir = filepath.Dir(p)
			}
			return err
		})
		if err == nil && pcDir == "" {
			err = fmt.Errorf("ninja install put no spbroker.pc under %s", prefix)
		}
		if err == nil {
			_, err = os.Stat(filepath.Join(pcDir, "spbroker-c.pc"))
		}
		return pcDir, err
	})
}

// pkgConfig runs pkg-config with args on the .pc files in pcDir alone
// and returns its output split into words.
func pkgConfig(t *testing.T, pcDir string, args ...string) []string {
	t.Helper()
	requireTool(t, "pkg-config")
	cmd := exec.Command("pkg-config", args...)
	// As a host would point it at a prefix of its own; the install's
	// files come before any of the system's.
	cmd.Env = append(os.Environ(), "PKG_CONFIG_PATH="+pcDir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "pkg-config %v: %s", args, out)
	return strings.Fields(string(out))
}

// installedLib is the library called pkg (spbroker or spbroker-c) as the
// meson configuration config installed it, with the compiler and linker
// flags that pkg-config gives for it, and nothing else; static asks
// pkg-config for --static flags.
func installedLib(t *testing.T, config, pkg string, static bool) lib {
	pcDir := mesonInstall(t, config)
	var flags [2][]string
	for i, which := range []string{"--cflags", "--libs"} {
		args := []string{which, pkg}
		if static {
			args = append([]string{"--static"}, args...)
		}
		flags[i] = pkgConfig(t, pcDir, args...)
	}
	// Which archive the name gives: the Go one only as spbroker from a
	// build with Go.
	want := strconv.FormatBool(pkg == "spbroker" && !slices.Contains(mesonConfigs[config], "-Dgo_runtime=false"))
	got := pkgConfig(t, pcDir, "--variable=go_runtime", pkg)
	require.Equal(t, []string{want}, got, "%s.pc's go_runtime variable in the %s install", pkg, config)
	name := config + "-" + pkg
	if static {
		name += "-static"
	}
	return lib{name: name, cflags: flags[0], libs: flags[1]}
}

// goArchive is the default build's libspbroker.a, the Go c-archive:
// pkg-config spbroker.
func goArchive(t *testing.T) lib {
	requireTool(t, "go")
	l := installedLib(t, "default", "spbroker", false)
	l.name = "go"
	return l
}

// sanitizers are the flags of the ASan+UBSan builds.
var sanitizers = []string{"-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"}

// cArchive is the runtime-free libspbroker-c.a (capi/spbroker_c.c and
// capi/shim.c with -DSPBROKER_NO_GO): pkg-config spbroker-c, from the
// default build, or with sanitize from the build compiled with ASan and
// UBSan, its programs compiled and run with them too.
func cArchive(t *testing.T, sanitize bool) lib {
	if !sanitize {
		l := installedLib(t, "default", "spbroker-c", false)
		l.name = "c"
		return l
	}
	l := installedLib(t, "asan", "spbroker-c", false)
	l.name = "asan"
	l.cflags = append(l.cflags, sanitizers...)
	l.libs = append(l.libs, sanitizers...)
	l.env = []string{
		"ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:strict_string_checks=1",
		"UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1",
	}
	return l
}

// cWarnings are the flags every test program is compiled with.
var cWarnings = []string{"-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"}

// program compiles test/NAME.c with test/testutil.c and links it with l.
func program(t *testing.T, l lib, name string) string {
	requireTool(t, "cc")
	return once(t, l.name+"/"+name, func() (string, error) {
		dir := filepath.Join(workDir, "bin", l.name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		out := filepath.Join(dir, name)
		args := append(append([]string{}, cWarnings...), l.cflags...)
		args = append(args, "-o", out, name+".c", "testutil.c")
		args = append(args, l.libs...)
		return out, runBuild(filepath.Join(repoRoot, "test"), nil, "cc", args...)
	})
}

// runnerBin builds test/runner.c, which runs a program with a time limit
// and reaps every process it leaves.
func runnerBin(t *testing.T) string { return standalone(t, "runner") }

// standalone builds test/NAME.c, a program of its own that links no
// library, once.
func standalone(t *testing.T, name string) string {
	requireTool(t, "cc")
	return once(t, name, func() (string, error) {
		out := filepath.Join(workDir, "bin", name)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return "", err
		}
		args := append(append([]string{}, cWarnings...), "-o", out, name+".c")
		return out, runBuild(filepath.Join(repoRoot, "test"), nil, "cc", args...)
	})
}

// tempDir returns a new empty directory with a short absolute path (for
// socket paths), removed when t ends.
func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp(workDir, "t")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// broker is a one-socket daemon started for a test.
type broker struct {
	path   string
	cmd    *exec.Cmd
	stderr testutil.LockedBuffer
	done   chan struct{}
}

var abstractSeq atomic.Uint64

// abstractName returns an abstract socket name no other broker uses.
func abstractName() string {
	return fmt.Sprintf("@spbctest-%d-%d", os.Getpid(), abstractSeq.Add(1))
}

// startBroker starts a broker listening on path (a file path, or "@name"
// for an abstract socket) and returns once it accepts connections. It is
// stopped, and its log shown if t failed, when t ends.
func startBroker(t *testing.T, path string) *broker {
	t.Helper()
	b := &broker{path: path, done: make(chan struct{})}
	// An abstract socket has no mode; these tests accept that.
	b.cmd = exec.Command(daemonBin(t), "--socket", path, "--log-level", "warn", "--open-abstract")
	b.cmd.Stderr = &b.stderr
	b.cmd.Stdout = &b.stderr
	require.NoError(t, b.cmd.Start())
	go func() {
		b.cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			b.cmd.Process.Kill()
			<-b.done
		}
		if t.Failed() && b.stderr.String() != "" {
			t.Logf("broker %s log:\n%s", path, b.stderr.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-b.done:
			t.Fatalf("broker on %s exited at start:\n%s", path, b.stderr.String())
		default:
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker on %s does not accept connections: %v\n%s", path, err, b.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// reportArg is how a program run by run finds its report pipe.
const reportArg = "--report-fd=3"

// result is what run saw of a program.
type result struct {
	code     int    // the runner's exit status (124: timed out)
	output   string // stdout and stderr of the program and its children
	report   string // what was written to the report pipe
	duration time.Duration
}

// timedOut reports whether the program, or a process it left, hung.
func (r result) timedOut() bool { return r.code == 124 }

// ok reports whether the program exited 0 and its report says "ok".
func (r result) ok() bool { return r.code == 0 && r.report == "ok\n" }

func (r result) String() string {
	return fmt.Sprintf("exit status %d, report %q, after %v; output:\n%s", r.code, r.report, r.duration.Round(time.Millisecond), r.output)
}

// run runs argv under the runner with a time limit, giving it a pipe as
// descriptor 3 for its report, and waits until it and every process it
// left behind are gone.
func run(t *testing.T, timeout time.Duration, env []string, argv ...string) result {
	t.Helper()
	res, err := runWith(runnerBin(t), timeout, env, argv...)
	require.NoError(t, err, "running %s", argv[0])
	return res
}

// runWith is run for goroutines other than the test's: it reports a
// failure to run as an error.
func runWith(runner string, timeout time.Duration, env []string, argv ...string) (result, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return result{}, err
	}
	defer r.Close()
	var out testutil.LockedBuffer
	// A backstop in case the runner itself hangs.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, runner, append([]string{strconv.FormatInt(timeout.Milliseconds(), 10)}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.ExtraFiles = []*os.File{w}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err = cmd.Start()
	w.Close()
	if err != nil {
		return result{}, err
	}
	report := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		report <- string(b)
	}()
	err = cmd.Wait()
	res := result{code: cmd.ProcessState.ExitCode(), duration: time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return res, err
	}
	select {
	case res.report = <-report:
	case <-time.After(5 * time.Second):
		res.report = "(report pipe still open)"
	}
	res.output = out.String()
	return res, nil
}

// requireOK fails t unless res is a clean success, showing the output
// without its passing checks.
func requireOK(t *testing.T, what string, res result) {
	t.Helper()
	if res.ok() {
		return
	}
	verb := "failed"
	if res.timedOut() {
		verb = "hung"
	}
	res.output = withoutPasses(res.output)
	t.Fatalf("%s %s: %v", what, verb, res)
}

// withoutPasses drops the "ok N - ..." lines of TAP output.
func withoutPasses(output string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(output, "\n") {
		if !strings.HasPrefix(line, "ok ") && line != "" {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// watchdogArg gives a program run with timeout a watchdog that fires
// first, so that a program stuck in a call says which one.
func watchdogArg(timeout time.Duration) string {
	return fmt.Sprintf("--watchdog=%d", int(timeout.Seconds()*2/3))
}

// summary returns the "# N passed, M failed" line of a TAP run.
func summary(output string) string {
	for line := range strings.SplitSeq(output, "\n") {
		if strings.HasPrefix(line, "# ") && strings.Contains(line, " passed, ") {
			return strings.TrimPrefix(line, "# ")
		}
	}
	return "(no summary)"
}
