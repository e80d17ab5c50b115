package validate

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stage is one FROM section of the Containerfile, its instructions with
// continuation lines joined.
type stage struct {
	from  string
	lines []string
}

func readContainerfile(t *testing.T) []stage {
	t.Helper()
	text, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "container", "Containerfile"))
	require.NoError(t, err)
	var stages []stage
	var cur strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		ins := cur.String()
		cur.Reset()
		if strings.HasPrefix(ins, "FROM ") {
			stages = append(stages, stage{from: ins})
			continue
		}
		require.NotEmpty(t, stages, "an instruction before FROM: %s", ins)
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, ins)
	}
	require.Len(t, stages, 2, "a build stage and a run stage")
	return stages
}

// find returns the stage's instructions that start with prefix.
func (s stage) find(prefix string) []string {
	var found []string
	for _, l := range s.lines {
		if strings.HasPrefix(l, prefix) {
			found = append(found, l)
		}
	}
	return found
}

// TestContainerfile builds the binaries the way the Containerfile's build
// stage does, from a directory holding only what it copies, and checks
// that the run stage puts them where the manifests call them.
func TestContainerfile(t *testing.T) {
	root := repoRoot(t)
	stages := readContainerfile(t)
	build, run := stages[0], stages[1]
	require.True(t, strings.HasSuffix(build.from, " AS build"), "the first stage is called build: %s", build.from)

	version := mesonVersion(t)
	for _, s := range stages {
		assert.Equal(t, []string{"ARG VERSION=" + version}, s.find("ARG VERSION="), "in the stage %s", s.from)
	}

	// A fresh directory with only what the build stage copies, in the
	// way COPY does: a directory's contents, or files, into the
	// destination directory.
	src := t.TempDir()
	for _, c := range build.find("COPY ") {
		f := strings.Fields(c)[1:]
		require.False(t, strings.HasPrefix(f[0], "--"), "the build stage copies from the context only: %s", c)
		dst := f[len(f)-1]
		require.True(t, strings.HasSuffix(dst, "/"), "COPY into a directory: %s", c)
		dst = filepath.Join(src, dst)
		require.NoError(t, os.MkdirAll(dst, 0o755))
		for _, s := range f[:len(f)-1] {
			from := filepath.Join(root, s)
			if strings.HasSuffix(s, "/") {
				from += "/."
			}
			out, err := exec.Command("cp", "-a", from, dst+"/").CombinedOutput()
			require.NoError(t, err, "%s: %s", c, out)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	var builds int
	for _, r := range build.find("RUN ") {
		if !strings.Contains(r, "go build") {
			continue
		}
		builds++
		buildCmd := strings.TrimPrefix(r, "RUN ")
		require.Contains(t, buildCmd, "-o /out/")
		cmd := exec.Command("sh", "-c", strings.ReplaceAll(buildCmd, "/out/", out+"/"))
		cmd.Dir = src
		cmd.Env = append(os.Environ(), "VERSION="+version)
		o, err := cmd.CombinedOutput()
		require.NoError(t, err, "the build stage's %s, on only what it copies: %s", r, o)
	}
	require.NotZero(t, builds, "no RUN go build")
	built, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range built {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"one-socket", "one-socketctl", EchoClient}, names)
	for _, name := range []string{"one-socket", "one-socketctl"} {
		v, err := exec.Command(filepath.Join(out, name), "--version").Output()
		require.NoError(t, err)
		assert.Equal(t, name+" "+version+"\n", string(v))
	}
	// The client has no --version; its usage shows that it is the
	// example's client, with the flags example.yaml gives it.
	usage, err := exec.Command(filepath.Join(out, EchoClient), "-help").CombinedOutput()
	require.NoError(t, err, "%s", usage)
	for _, name := range echoClientFlags {
		assert.Contains(t, string(usage), "\n  -"+name+" ", "%s -help", EchoClient)
	}

	// The run stage puts all three on PATH, where the manifests call them
	// by name.
	copies := run.find("COPY --from=build ")
	require.Len(t, copies, 1)
	f := strings.Fields(copies[0])[2:]
	assert.Equal(t, "/usr/local/bin/", f[len(f)-1])
	assert.ElementsMatch(t, []string{"/out/one-socket", "/out/one-socketctl", "/out/" + EchoClient}, f[:len(f)-1])
	for _, c := range run.find("COPY ") {
		if !strings.HasPrefix(c, "COPY --from=") {
			_, err := os.Stat(filepath.Join(root, strings.Fields(c)[1]))
			assert.NoError(t, err, c)
		}
	}
	assert.Equal(t, []string{`ENTRYPOINT ["/usr/local/bin/one-socket"]`}, run.find("ENTRYPOINT "))
	assert.Regexp(t, regexp.MustCompile(`^FROM docker\.io/library/debian:\S+$`), run.from,
		"the manifests need sh and install from the run stage's base")
}

// TestCommandsExist checks that every program the manifests start is one
// the image has: the three of this project and the base image's sh and
// install.
func TestCommandsExist(t *testing.T) {
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	known := []string{"one-socket", "one-socketctl", EchoClient, "sh", "/bin/sh", "install"}
	for _, p := range d.Pods {
		for _, c := range containers(p.Spec) {
			assert.Contains(t, known, c.Command[0], "%s: container %s", p, c.Name)
			for _, probe := range []string{"readiness", "liveness"} {
				pr := c.ReadinessProbe
				if probe == "liveness" {
					pr = c.LivenessProbe
				}
				if pr != nil && pr.Exec != nil {
					assert.True(t, slices.Contains(known, path.Base(pr.Exec.Command[0])), "%s: %s probe of %s", p, probe, c.Name)
				}
			}
		}
	}
}

// TestDaemonAcceptsFlags runs the daemon with the DaemonSet's arguments
// and --version, which parses and checks every flag and then exits: an
// unknown flag or a bad value ends it with status 2.
func TestDaemonAcceptsFlags(t *testing.T) {
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	bin := binaries(t)
	c := d.Broker.Container
	args := append(slices.Clone(c.Command[1:]), c.Args...)
	out, err := exec.Command(filepath.Join(bin, c.Command[0]), append(args, "--version")...).CombinedOutput()
	require.NoError(t, err, "one-socket %q: %s", args, out)
	assert.True(t, strings.HasPrefix(string(out), "one-socket "), "%s", out)

	// The same check catches a misspelt flag.
	out, err = exec.Command(filepath.Join(bin, "one-socket"), "--max-waiting-per-user=64", "--version").CombinedOutput()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, 2, ee.ExitCode(), "%s", out)
}
