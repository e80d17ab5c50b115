package validate

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/testutil"
)

// repoRoot is the checkout's top: this module is deploy/kubernetes/validate.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	require.NoError(t, err)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "this module must sit at deploy/kubernetes/validate in the repository")
	require.Contains(t, string(gomod), "module github.com/one-socket/one-socket\n")
	return root
}

func manifestDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy", "kubernetes") }

// mesonVersion is the project's version, which meson.build holds.
func mesonVersion(t *testing.T) string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repoRoot(t), "meson.build"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s*version:\s*'([^']+)'`).FindSubmatch(text)
	require.NotNil(t, m, "no version: '...' in meson.build")
	return string(m[1])
}

// want is what every manifest must agree with: the images are those the
// Containerfiles build.
func want(t *testing.T) Want {
	w := Want{Version: mesonVersion(t)}
	for _, cf := range readContainerfiles(t) {
		w.Images = append(w.Images, cf.image)
	}
	return w
}

// cannotCheck skips t for the reason given, or fails it under
// ONE_SOCKET_REQUIRE_ALL=1, where every check must run.
func cannotCheck(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("ONE_SOCKET_REQUIRE_ALL") == "1" {
		t.Fatalf("this check cannot run, and ONE_SOCKET_REQUIRE_ALL=1 forbids skipping it: %s", why)
	}
	t.Skipf("skipped: %s", why)
}

// readManifests returns the text of every manifest file.
func readManifests(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := ReadDir(manifestDir(t))
	require.NoError(t, err)
	return files
}

// checkFiles parses and checks a set of manifest texts.
func checkFiles(t *testing.T, files map[string][]byte) (*Deployment, []error) {
	t.Helper()
	objs, err := ParseAll(files)
	require.NoError(t, err)
	return Check(objs, want(t))
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds one-socket, one-socketctl and the example's client
// (named as in the image) from this checkout, once for the whole run, into
// a directory every user may read (the node test runs them under other
// uids), and returns it.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "one-socket-k8s-bin-")
		if buildErr != nil {
			return
		}
		if buildErr = os.Chmod(binDir, 0o755); buildErr != nil {
			return
		}
		opts := &testutil.BuildOptions{Dir: repoRoot(t)}
		if buildErr = testutil.Build(binDir+"/", opts, "./cmd/one-socket", "./cmd/one-socketctl"); buildErr != nil {
			return
		}
		buildErr = testutil.Build(filepath.Join(binDir, EchoClient), opts, "./deploy/examples/echo-client")
	})
	require.NoError(t, buildErr)
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// replaceOnce returns text with old, which must occur exactly once,
// replaced by new: an alteration that does not apply would let a negative
// test pass for the wrong reason.
func replaceOnce(t *testing.T, text, old, new string) string {
	t.Helper()
	require.Equal(t, 1, strings.Count(text, old), "%q must occur exactly once", old)
	return strings.Replace(text, old, new, 1)
}
