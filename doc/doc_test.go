// Package doc_test keeps the documentation true to the code. It checks
// that every relative link and #anchor in README.md and doc/*.md leads
// somewhere; that the daemon's flags and the control tool's commands, as
// the built programs print them in --help, are the ones README.md,
// doc/one-socket.md, doc/one-socketctl.md and the manual pages describe;
// that every Go block of doc/go.md compiles against the module from a
// module of its own, as a user's program would; that the hex dumps in
// doc/protocol.md are what the encoder produces; that every sample log
// line has the keys, in order, of the line a real daemon writes; that the
// Kubernetes guide shows the DaemonSet's command line; and that every test
// a document names exists.
//
// Each failure names the file, the line where there is one, and what is
// wrong. The tests build one-socket and one-socketctl once, into a
// temporary directory, run a go vet for doc/go.md and a daemon for each
// kind of sample log line; with a warm build cache the whole package takes
// a few seconds.
package doc_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/one-socket/one-socket/internal/testutil"
)

var (
	// repoRoot is the repository's root directory, the parent of doc/.
	repoRoot string
	// workDir holds the built programs; TestMain removes it.
	workDir string
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RepoMain(m, "doc", "one-socket-doc", func(root, work string) error {
		repoRoot, workDir = root, work
		return nil
	}))
}

var (
	buildOnce sync.Once
	buildErr  error
)

// programs builds one-socket and one-socketctl, once for the whole run,
// and returns the directory that holds them.
func programs(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir := filepath.Join(workDir, "bin")
		buildErr = testutil.Build(dir+string(filepath.Separator), &testutil.BuildOptions{Dir: repoRoot}, "./cmd/one-socket", "./cmd/one-socketctl")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(workDir, "bin")
}

// run runs one of the built programs with args and returns its standard
// output; a failure to run, or a non-zero exit, fails the test.
func run(t *testing.T, program string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(programs(t), program), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", program, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// markdownFiles returns README.md and every doc/*.md that exists now,
// relative to the repository root. Guides still being written are
// checked from the moment they exist.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	docs, err := filepath.Glob(filepath.Join(repoRoot, "doc", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		files = append(files, "doc/"+filepath.Base(d))
	}
	sub, err := filepath.Glob(filepath.Join(repoRoot, "doc", "*", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range sub {
		rel, err := filepath.Rel(repoRoot, d)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	return files
}
