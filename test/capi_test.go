package ctest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// conformance runs test/conformance.c, linked with l, against a broker on
// a file path and one on an abstract name, both its own. wrap goes before
// the program (valgrind); extra after its arguments (--fork, --when).
func conformance(t *testing.T, l lib, timeout time.Duration, wrap []string, extra ...string) result {
	t.Helper()
	prog := program(t, l, "conformance")
	dir := tempDir(t)
	fake := filepath.Join(dir, "fake")
	require.NoError(t, os.Mkdir(fake, 0o755))
	b := startBroker(t, filepath.Join(dir, "one.sock"))
	ab := startBroker(t, abstractName())
	argv := append(append([]string{}, wrap...), prog, "--broker="+b.path, "--abstract="+ab.path, "--tmp="+fake, watchdogArg(timeout), reportArg)
	res := run(t, timeout, l.env, append(argv, extra...)...)
	t.Logf("%s: %s, %v", l.name, summary(res.output), res.duration.Round(time.Millisecond))
	return res
}

// TestConformance runs the whole C conformance suite on every build of the
// library and in every kind of forked child: each function, each
// documented success and failure, errno values, messages, descriptors.
func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("go", func(t *testing.T) {
		t.Parallel()
		requireOK(t, "conformance on the Go archive", conformance(t, goArchive(t), time.Minute, nil))
	})
	// The same suite in a child of a process that links the Go archive:
	// the library must notice and serve the child from the C path.
	for _, kind := range []string{"fork", "daemon", "sysfork"} {
		for _, when := range []string{"before", "after"} {
			t.Run("go/"+kind+"-"+when, func(t *testing.T) {
				t.Parallel()
				res := conformance(t, goArchive(t), time.Minute, nil, "--fork="+kind, "--when="+when)
				requireOK(t, fmt.Sprintf("conformance in a child of %s, %s the first call", kind, when), res)
				require.Contains(t, res.output, "# running in a child made by "+kind)
			})
		}
	}
	t.Run("c", func(t *testing.T) {
		t.Parallel()
		requireOK(t, "conformance on the runtime-free archive", conformance(t, cArchive(t, false), time.Minute, nil))
	})
	t.Run("c/fork-after", func(t *testing.T) {
		t.Parallel()
		requireOK(t, "conformance in a forked child, runtime-free archive",
			conformance(t, cArchive(t, false), time.Minute, nil, "--fork=fork", "--when=after"))
	})
	t.Run("asan", func(t *testing.T) {
		t.Parallel()
		res := conformance(t, cArchive(t, true), 2*time.Minute, nil)
		requireOK(t, "conformance on the runtime-free archive under ASan and UBSan", res)
		require.NotContains(t, res.output, "runtime error:", "UBSan report")
		require.NotContains(t, res.output, "Sanitizer", "sanitizer report")
	})
	t.Run("valgrind", func(t *testing.T) {
		t.Parallel()
		vg := requireTool(t, "valgrind")
		wrap := []string{vg, "--quiet", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
			"--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=1", "--track-fds=yes"}
		// The control first: a program that leaks two descriptors on
		// purpose (test/fdleak.c) must be caught, or an empty report below
		// would prove nothing. Whether a clean run prints a report at all
		// depends on valgrind's release.
		leaky := run(t, time.Minute, nil, append(append([]string{}, wrap...), standalone(t, "fdleak"))...)
		require.Len(t, createdFDs(leaky.output), 2, "valgrind --track-fds missed the control's two descriptors:\n%s", leaky.output)

		res := conformance(t, cArchive(t, false), 3*time.Minute, wrap)
		requireOK(t, "conformance on the runtime-free archive under valgrind", res)
		// Every descriptor open at exit must be inherited, none opened by
		// the program or the library.
		require.Empty(t, createdFDs(res.output), "descriptors left open at exit")
	})
	// Every archive is the installed one, compiled and linked with what
	// pkg-config says and nothing else; here the rest of the names and
	// builds: --static, and the build without Go, whose spbroker is the
	// runtime-free archive too.
	for _, c := range []struct {
		config, pkg string
		static      bool
	}{
		{"default", "spbroker", true},
		{"default", "spbroker-c", true},
		{"nogo", "spbroker", false},
		{"nogo", "spbroker", true},
		{"nogo", "spbroker-c", false},
	} {
		name := "installed-" + c.config + "/" + c.pkg
		if c.static {
			name += "-static"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireOK(t, "conformance built with pkg-config against the meson install",
				conformance(t, installedLib(t, c.config, c.pkg, c.static), time.Minute, nil))
		})
	}
}

// TestInstalledConsumer builds test/meson-consumer, a project that finds
// the installed library with dependency('spbroker') or
// dependency('spbroker-c'), against the meson installs, runs its test, and
// pairs two of its processes through a broker.
func TestInstalledConsumer(t *testing.T) {
	t.Parallel()
	src := filepath.Join(repoRoot, "test", "meson-consumer")
	for _, c := range []struct{ config, pkg, goRuntime string }{
		{"default", "spbroker", "true"},
		{"default", "spbroker-c", "false"},
		{"nogo", "spbroker", "false"},
	} {
		t.Run(c.config+"/"+c.pkg, func(t *testing.T) {
			t.Parallel()
			pcDir := mesonInstall(t, c.config)
			build := filepath.Join(tempDir(t), "build")
			env := []string{"PKG_CONFIG_PATH=" + pcDir}
			require.NoError(t, runBuild(src, env, "meson", "setup", build, src, "-Dpackage="+c.pkg))
			require.NoError(t, runBuild(src, env, "ninja", "-C", build))
			require.NoError(t, runBuild(src, env, "meson", "test", "-C", build, "--print-errorlogs"))
			// What meson found, as the consumer's meson.build reports it.
			log, err := os.ReadFile(filepath.Join(build, "meson-logs", "meson-log.txt"))
			require.NoError(t, err)
			require.Contains(t, string(log), fmt.Sprintf("Message: %s: go_runtime=%s", c.pkg, c.goRuntime))

			b := startBroker(t, filepath.Join(tempDir(t), "one.sock"))
			consumer := filepath.Join(build, "consumer")
			var wg sync.WaitGroup
			results := make([]result, 2)
			for i := range results {
				wg.Go(func() { results[i] = run(t, 30*time.Second, nil, consumer, b.path, "consumer-key") })
			}
			wg.Wait()
			for _, res := range results {
				require.Equal(t, 0, res.code, "consumer: %v", res)
				require.Contains(t, res.output, `paired: the peer said "hello"`)
			}
		})
	}
}

// TestLibraryCompilesCleanly: the runtime-free library compiles with
// every warning an error, the way a distribution with strict flags would
// build it; the meson build without Go (and the one with sanitizers) is
// configured with --werror.
func TestLibraryCompilesCleanly(t *testing.T) {
	t.Parallel()
	require.Contains(t, mesonConfigs["nogo"], "--werror")
	mesonInstall(t, "nogo")
}

// TestHeaders compiles both public headers as C++ (with static assertions
// of the layout), links against each archive and calls the functions;
// and compiles them as strict C99 and C11.
func TestHeaders(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"go", "c"} {
		t.Run("c++11/"+name, func(t *testing.T) {
			t.Parallel()
			cxx := requireTool(t, "c++")
			l := libByName(t, name)
			out := filepath.Join(tempDir(t), "headers")
			args := append([]string{"-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"}, l.cflags...)
			args = append(append(args, "-o", out, filepath.Join("cxx", "headers.cc")), l.libs...)
			require.NoError(t, runBuild(filepath.Join(repoRoot, "test"), nil, cxx, args...))
			res := run(t, 30*time.Second, nil, out)
			t.Logf("%s: %s", l.name, strings.TrimSpace(res.output))
			require.Equal(t, 0, res.code, "%s: %v", l.name, res)
			require.Contains(t, res.output, "# 0 failed")
		})
	}
	for _, std := range []string{"c99", "c11"} {
		t.Run(std, func(t *testing.T) {
			t.Parallel()
			requireTool(t, "cc")
			dir := tempDir(t)
			src := filepath.Join(dir, "headers.c")
			code := "#include <socketpair-broker/helper.h>\n#include <socketpair-broker/proto.h>\n" +
				"#include <socketpair-broker/helper.h>\n" + // the include guards hold
				"typedef char size_ok[sizeof(struct sp_broker_msg) == 1304 && SP_BROKER_MESSAGE_SIZE == 1044 ? 1 : -1];\n" +
				"int f(void) { size_ok s; (void) s; return sp_broker_message_validate((const struct sp_broker_msg *) 0, (const enum sp_broker_request *) 0, 0, (char **) 0); }\n"
			require.NoError(t, os.WriteFile(src, []byte(code), 0o644))
			require.NoError(t, runBuild(dir, nil, "cc", "-std="+std, "-pedantic", "-Wall", "-Wextra", "-Werror",
				"-I", filepath.Join(repoRoot, "include"), "-c", "-o", filepath.Join(dir, "headers.o"), src))
		})
	}
}

// TestHostSIGPIPE: a host that ignores SIGPIPE and has closed, broken (a
// pipe nobody reads) or captured stderr goes through every error path and
// is not killed; nothing is written to its stderr.
func TestHostSIGPIPE(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"go", "c"} {
		for _, mode := range []string{"closed", "broken", "captured"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				l := libByName(t, name)
				prog := program(t, l, "sigpipe")
				dir := tempDir(t)
				b := startBroker(t, filepath.Join(dir, "one.sock"))
				res := run(t, 30*time.Second, l.env, prog, "--broker="+b.path, "--tmp="+dir, "--stderr="+mode, watchdogArg(30*time.Second), reportArg)
				t.Logf("%s", summary(res.output))
				requireOK(t, "a host that ignores SIGPIPE with its stderr "+mode, res)
			})
		}
	}
}

// TestThreads: 16 threads call sp_broker_get_pair at once, 8 keys with a
// server and a client each; every thread is connected to its partner.
func TestThreads(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		lib   string
		extra []string
	}{
		{"go", "go", nil},
		{"c", "c", nil},
		{"go/fork-after", "go", []string{"--fork=fork", "--when=after"}},
		{"go/daemon-before", "go", []string{"--fork=daemon", "--when=before"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l := libByName(t, c.lib)
			prog := program(t, l, "threads")
			b := startBroker(t, filepath.Join(tempDir(t), "one.sock"))
			res := run(t, 30*time.Second, l.env, append([]string{prog, "--broker=" + b.path, watchdogArg(30 * time.Second), reportArg}, c.extra...)...)
			t.Logf("%s", summary(res.output))
			requireOK(t, "16 threads pairing", res)
		})
	}
}

// TestSignalMask: a host that blocks signals in main() finds its mask
// unchanged after every call; the runtime-free build also leaves the
// signals to the host (no threads, no handlers, delivery to sigtimedwait).
func TestSignalMask(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"go", "c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l := libByName(t, name)
			prog := program(t, l, "sigmask")
			b := startBroker(t, filepath.Join(tempDir(t), "one.sock"))
			argv := []string{prog, "--broker=" + b.path, watchdogArg(30 * time.Second), reportArg}
			if name == "c" {
				argv = append(argv, "--runtime-free")
			}
			res := run(t, 30*time.Second, l.env, argv...)
			t.Logf("%s", summary(res.output))
			requireOK(t, "a host that blocks signals", res)
		})
	}
}

// libByName returns the Go archive ("go") or the runtime-free one ("c").
func libByName(t *testing.T, name string) lib {
	switch name {
	case "go":
		return goArchive(t)
	case "c":
		return cArchive(t, false)
	}
	t.Fatalf("no library build called %q", name)
	return lib{}
}

// valgrindFD is one descriptor that valgrind --track-fds lists, with the
// line after it: "<inherited from parent>" or where it was created.
var valgrindFD = regexp.MustCompile(`==\d+== (Open [^\n]*?\d+:[^\n]*)\n==\d+==\s+([^\n]*)`)

// createdFDs returns the descriptors that valgrind's report lists as open
// at exit and not inherited, with the place each was created.
func createdFDs(output string) []string {
	var created []string
	for _, m := range valgrindFD.FindAllStringSubmatch(output, -1) {
		if m[2] != "<inherited from parent>" {
			created = append(created, m[1]+" "+m[2])
		}
	}
	return created
}

// TestCreatedFDs checks the reading of valgrind's descriptor report, on
// which the valgrind run's descriptor check depends.
func TestCreatedFDs(t *testing.T) {
	t.Parallel()
	report := `==1== FILE DESCRIPTORS: 6 open (3 std) at exit.
==1== Open file descriptor 4: /dev/null
==1==    at 0x4954011: open (open64.c:41)
==1==    by 0x109179: main (in /tmp/leakfd)
==1== 
==1== Open AF_UNIX socket 3: <unknown>
==1==    at 0x4966DC7: socket (syscall-template.S:120)
==1== 
==1== Open file descriptor 251:
==1==    <inherited from parent>
==1== 
`
	require.Equal(t, []string{
		"Open file descriptor 4: /dev/null at 0x4954011: open (open64.c:41)",
		"Open AF_UNIX socket 3: <unknown> at 0x4966DC7: socket (syscall-template.S:120)",
	}, createdFDs(report))
	require.Empty(t, createdFDs("==1== Open file descriptor 3: /dev/null\n==1==    <inherited from parent>\n"))
}
