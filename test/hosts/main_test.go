package hosts

// The harness: TestMain builds the daemon and the control tool; each test
// starts its own daemon and runs one-socketctl pair processes against it.

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/one-socket/one-socket/internal/control"
	"github.com/one-socket/one-socket/internal/testutil"
)

// hang bounds every wait for a process: past it the program is taken to
// hang, and the test fails instead of blocking the suite. It is no
// measure of speed; a TCG boot takes seconds, and this is minutes.
const hang = 2 * time.Minute

var (
	// workDir holds the binaries and the guest's initramfs; TestMain
	// removes it.
	workDir           string
	daemonBin, ctlBin string
)

func TestMain(m *testing.M) {
	// Short: the broker's socket lives in a directory of its own, but a
	// long TMPDIR could still push paths past sun_path's 108 bytes.
	os.Exit(testutil.RepoMain(m, "hosts", "hosts", func(root, work string) error {
		workDir = work
		daemonBin = filepath.Join(work, "one-socket")
		ctlBin = filepath.Join(work, "one-socketctl")
		if err := testutil.Build(work+"/", &testutil.BuildOptions{Dir: root}, "./cmd/one-socket", "./cmd/one-socketctl"); err != nil {
			return fmt.Errorf("building one-socket and one-socketctl: %w", err)
		}
		return nil
	}))
}

// cannotRun skips t for the reason given, or fails it when
// ONE_SOCKET_REQUIRE_ALL=1 says that every check must run (as in CI).
func cannotRun(t testing.TB, format string, args ...any) {
	t.Helper()
	testutil.Need(t, false, fmt.Sprintf(format, args...))
}

// program is a program the tests run, and the Debian package that has it.
type program struct {
	name, pkg string
	static    bool // it must be statically linked (it runs in the guest)
}

var (
	qemuSystem    = program{name: "qemu-system-x86_64", pkg: "qemu-system-x86"}
	storageDaemon = program{name: "qemu-storage-daemon", pkg: "qemu-system-common"}
	qemuImg       = program{name: "qemu-img", pkg: "qemu-utils"}
	testpmdProg   = program{name: "dpdk-testpmd", pkg: "dpdk-dev"}
	// QEMU 7.2's C virtiofsd; the package puts it outside PATH.
	virtiofsd = program{name: "/usr/lib/qemu/virtiofsd", pkg: "qemu-system-common"}
	// Debian's busybox package has a dynamic busybox at the same path.
	busybox = program{name: "/bin/busybox", pkg: "busybox-static", static: true}
)

// need skips t unless every program is installed, naming each missing
// package once, so that one skip tells all there is to install.
func need(t testing.TB, progs ...program) {
	t.Helper()
	var missing []string
	for _, p := range progs {
		if !p.installed() && !slices.Contains(missing, p.pkg) {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) > 0 {
		cannotRun(t, "missing programs; install them with: apt-get install --no-install-recommends %s", strings.Join(missing, " "))
	}
}

func (p program) installed() bool {
	path, err := exec.LookPath(p.name)
	if err != nil {
		return false
	}
	if p.static {
		static, err := isStatic(path)
		return err == nil && static
	}
	return true
}

// path returns where p is, skipping t if it is not installed.
func (p program) path(t testing.TB) string {
	t.Helper()
	need(t, p)
	path, _ := exec.LookPath(p.name)
	return path
}

// isStatic reports whether the ELF file at path has no program
// interpreter.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// testEnv is the environment of the processes under test: the test's own,
// less what would change where they look or what they are passed.
func testEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "ONE_SOCKET_PATH", "ONE_SOCKET_CTL_PATH", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// shortTempDir returns a temporary directory whose socket paths fit in
// sun_path (t.TempDir's, with a long test name, may not).
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hst")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// broker is a one-socket daemon serving one test.
type broker struct {
	dir  string // holds the broker and control sockets
	sock string
	proc *testutil.Proc
}

// startBroker starts a daemon on a socket of its own and waits until it
// answers on its control socket.
func startBroker(t *testing.T) *broker {
	t.Helper()
	dir := shortTempDir(t)
	b := &broker{dir: dir, sock: filepath.Join(dir, "one.socket")}
	cmd := exec.Command(daemonBin, "--socket", b.sock)
	cmd.Env = testEnv()
	b.proc = testutil.StartProc(t, "one-socket", cmd)
	ctl := filepath.Join(dir, "one-socket.ctl")
	b.proc.WaitFor(t, "the broker's control socket", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := control.Call(ctx, ctl, control.Request{Command: "status"})
		return err == nil
	})
	return b
}

// pair runs one-socketctl pair KEY --mode MODE with the options opts,
// and with the command argv after "--" if there is one.
func (b *broker) pair(t *testing.T, key, mode string, opts []string, argv ...string) *testutil.Proc {
	t.Helper()
	args := append([]string{"--socket", b.sock, "pair", key, "--mode", mode}, opts...)
	name := "one-socketctl pair " + mode
	if len(argv) > 0 {
		args = append(append(args, "--"), argv...)
		name += " -- " + filepath.Base(argv[0])
	}
	cmd := exec.Command(ctlBin, args...)
	cmd.Env = testEnv()
	return testutil.StartProc(t, name, cmd)
}

// start runs a program under test directly, without the broker.
func start(t *testing.T, argv ...string) *testutil.Proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = testEnv()
	return testutil.StartProc(t, filepath.Base(argv[0]), cmd)
}

// exitStatus waits for p to exit and returns its exit status (-1 if a
// signal killed it).
func exitStatus(t *testing.T, p *testutil.Proc) int {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(hang):
		t.Fatalf("%s did not exit within %v; its log:\n%s", p.Name, hang, p.Log.String())
	}
	return p.Cmd.ProcessState.ExitCode()
}

// requireExit waits for p and fails t unless it exits with status want.
func requireExit(t *testing.T, p *testutil.Proc, want int) {
	t.Helper()
	if got := exitStatus(t, p); got != want {
		t.Fatalf("%s exited with status %d, not %d; its log:\n%s", p.Name, got, want, p.Log.String())
	}
}

// stop sends SIGTERM to p (one-socketctl passes it on to its command),
// and fails t unless p then exits with status want.
func stop(t *testing.T, p *testutil.Proc, want int) {
	t.Helper()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.Exited() {
		t.Fatalf("signalling %s: %v", p.Name, err)
	}
	requireExit(t, p, want)
}
