package validate

import (
	"fmt"
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
	corev1 "k8s.io/api/core/v1"
)

// stage is one FROM section of a Containerfile, its instructions with
// continuation lines joined.
type stage struct {
	from  string
	lines []string
}

// containerfile is one of deploy/container's Containerfiles.
type containerfile struct {
	rel    string // its path in the repository
	image  string // the image its header's build command makes (-t)
	stages []stage
}

// buildLine is the build command each Containerfile's header gives,
// which names the file and the image.
var buildLine = regexp.MustCompile(`(?m)^#\s+podman build -f (\S+) -t (\S+) \.$`)

// readContainerfiles reads every deploy/container/Containerfile*.
func readContainerfiles(t *testing.T) []containerfile {
	t.Helper()
	root := repoRoot(t)
	names, err := filepath.Glob(filepath.Join(root, "deploy", "container", "Containerfile*"))
	require.NoError(t, err)
	require.NotEmpty(t, names)
	var cfs []containerfile
	for _, name := range names {
		rel, err := filepath.Rel(root, name)
		require.NoError(t, err)
		text, err := os.ReadFile(name)
		require.NoError(t, err)
		cf := containerfile{rel: filepath.ToSlash(rel)}
		m := buildLine.FindAllStringSubmatch(string(text), -1)
		require.Len(t, m, 1, "%s: its header gives one podman build -f FILE -t IMAGE . line", cf.rel)
		require.Equal(t, cf.rel, m[0][1], "%s: the build command in its header names another file", cf.rel)
		cf.image = m[0][2]
		cf.stages = parseStages(t, cf.rel, string(text))
		cfs = append(cfs, cf)
	}
	return cfs
}

func parseStages(t *testing.T, rel, text string) []stage {
	t.Helper()
	var stages []stage
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
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
		require.NotEmpty(t, stages, "%s: an instruction before FROM: %s", rel, ins)
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, ins)
	}
	require.Len(t, stages, 2, "%s: a build stage and a run stage", rel)
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

// binaries returns the names of the programs the run stage copies from
// the build stage, and the directory it puts them in.
func (cf containerfile) binaries(t *testing.T) (names []string, dir string) {
	t.Helper()
	copies := cf.stages[1].find("COPY --from=build ")
	require.Len(t, copies, 1, "%s: one COPY --from=build", cf.rel)
	f := strings.Fields(copies[0])[2:]
	for _, src := range f[:len(f)-1] {
		names = append(names, path.Base(src))
	}
	return names, f[len(f)-1]
}

// packages returns the Debian packages the run stage installs.
func (cf containerfile) packages() []string {
	var pkgs []string
	for _, r := range cf.stages[1].find("RUN ") {
		for _, cmd := range strings.Split(r, "&&") {
			f := strings.Fields(cmd)
			if i := slices.Index(f, "install"); i > 0 && path.Base(f[i-1]) == "apt-get" {
				for _, a := range f[i+1:] {
					if !strings.HasPrefix(a, "-") {
						pkgs = append(pkgs, a)
					}
				}
			}
		}
	}
	return pkgs
}

// TestContainerfile builds the binaries the way each Containerfile's
// build stage does, from a directory holding only what it copies, and
// checks that the run stage puts them where the manifests call them and
// that its label and tag name the same image.
func TestContainerfile(t *testing.T) {
	root := repoRoot(t)
	version := mesonVersion(t)
	images := map[string]string{}
	for _, cf := range readContainerfiles(t) {
		if prev, dup := images[cf.image]; dup {
			t.Errorf("%s and %s build the same image %s", prev, cf.rel, cf.image)
		}
		images[cf.image] = cf.rel
		t.Run(path.Base(cf.rel), func(t *testing.T) {
			build, run := cf.stages[0], cf.stages[1]
			require.True(t, strings.HasSuffix(build.from, " AS build"), "the first stage is called build: %s", build.from)
			for _, s := range cf.stages {
				assert.Equal(t, []string{"ARG VERSION=" + version}, s.find("ARG VERSION="), "in the stage %s", s.from)
			}
			// The image's name: ghcr.io/one-socket/TITLE:VERSION, TITLE
			// being the run stage's title label.
			title := regexp.MustCompile(`org\.opencontainers\.image\.title="([^"]+)"`).FindStringSubmatch(strings.Join(run.find("LABEL "), "\n"))
			require.NotNil(t, title, "the run stage has no title label")
			assert.Equal(t, "ghcr.io/one-socket/"+title[1]+":"+version, cf.image)

			// A fresh directory with only what the build stage copies, in
			// the way COPY does: a directory's contents, or files, into
			// the destination directory.
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
			for _, name := range names {
				switch name {
				case "one-socket", "one-socketctl":
					v, err := exec.Command(filepath.Join(out, name), "--version").Output()
					require.NoError(t, err)
					assert.Equal(t, name+" "+version+"\n", string(v))
				case EchoClient:
					// The client has no --version; its usage shows that it
					// is the example's client, with the flags example.yaml
					// gives it.
					usage, err := exec.Command(filepath.Join(out, EchoClient), "-help").CombinedOutput()
					require.NoError(t, err, "%s", usage)
					for _, flag := range echoClientFlags {
						assert.Contains(t, string(usage), "\n  -"+flag+" ", "%s -help", EchoClient)
					}
				default:
					t.Errorf("the build stage builds %s, which this test does not know", name)
				}
			}

			// The run stage puts exactly what was built on PATH, where the
			// manifests call it by name.
			copied, dir := cf.binaries(t)
			assert.Equal(t, "/usr/local/bin/", dir)
			assert.ElementsMatch(t, names, copied)
			for _, c := range run.find("COPY ") {
				if !strings.HasPrefix(c, "COPY --from=") {
					_, err := os.Stat(filepath.Join(root, strings.Fields(c)[1]))
					assert.NoError(t, err, c)
				}
			}
			entry := run.find("ENTRYPOINT ")
			require.Len(t, entry, 1)
			m := regexp.MustCompile(`^ENTRYPOINT \["/usr/local/bin/([^"]+)"\]$`).FindStringSubmatch(entry[0])
			if assert.NotNil(t, m, "the entry point is one of the binaries: %s", entry[0]) {
				assert.Contains(t, copied, m[1])
			}
			// Not root by default, nor the broker's uid in an image that
			// is not the broker's.
			user := run.find("USER ")
			require.Len(t, user, 1)
			assert.NotRegexp(t, `^USER (0|root)(:|$)`, user[0])
			if !slices.Contains(copied, "one-socket") {
				assert.NotRegexp(t, `^USER 10001(:|$)`, user[0], "only the broker runs as its uid")
			}
			assert.Regexp(t, regexp.MustCompile(`^FROM docker\.io/library/debian:\S+$`), run.from,
				"the manifests need sh and install from the run stage's base")
		})
	}
}

// commandDirs are where Debian puts the commands on the image's PATH.
var commandDirs = []string{"/usr/bin", "/bin", "/usr/sbin", "/sbin"}

// debianPackage returns the package that has the command name on this
// machine's Debian, and whether it is Essential (in every Debian image,
// bookworm-slim included). ok is false if no installed package has it.
func debianPackage(t *testing.T, name string) (pkg string, essential, ok bool) {
	t.Helper()
	for _, dir := range commandDirs {
		out, err := exec.Command("dpkg-query", "-S", path.Join(dir, name)).Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			owners, file, found := strings.Cut(line, ": ")
			if !found || strings.HasPrefix(line, "diversion by ") || file != path.Join(dir, name) {
				continue
			}
			pkg = strings.TrimSpace(strings.Split(owners, ",")[0])
			e, err := exec.Command("dpkg-query", "-W", "-f=${Essential}", pkg).Output()
			require.NoError(t, err, "dpkg-query -W %s", pkg)
			return pkg, string(e) == "yes", true
		}
	}
	return "", false, false
}

// TestCommandsExist checks that every program the manifests start, as a
// container's command, a probe, or the command of one-socketctl pair, is
// in the image that starts it: a binary the Containerfile builds, or a
// command of a package it installs or of Debian's Essential packages,
// which its base image has. The packages are looked up in this machine's
// dpkg database, which must be Debian 12's like the images. (Commands
// inside shell scripts are not checked.)
func TestCommandsExist(t *testing.T) {
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	byImage := map[string]containerfile{}
	for _, cf := range readContainerfiles(t) {
		byImage[cf.image] = cf
	}
	var unknown []string
	for _, p := range d.Pods {
		for _, c := range containers(p.Spec) {
			cf, ok := byImage[c.Image]
			require.True(t, ok, "%s: container %s: image %s", p, c.Name, c.Image)
			copied, _ := cf.binaries(t)
			var progs []string
			argv := append(slices.Clone(c.Command), c.Args...)
			progs = append(progs, argv[0])
			if path.Base(argv[0]) == Ctl {
				if line, err := ParseCtl(argv[1:]); err == nil && line.Exec != nil {
					progs = append(progs, line.Exec[0])
				}
			}
			for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if pr != nil && pr.Exec != nil {
					progs = append(progs, pr.Exec.Command[0])
				}
			}
			for _, prog := range progs {
				name := path.Base(prog)
				if slices.Contains(copied, name) {
					assert.True(t, prog == name || prog == "/usr/local/bin/"+name, "%s: container %s runs %s, but the image has it in /usr/local/bin", p, c.Name, prog)
					continue
				}
				pkg, essential, ok := debianPackage(t, name)
				switch {
				case !ok:
					unknown = append(unknown, fmt.Sprintf("%s (in %s)", name, cf.rel))
				case !essential && !slices.Contains(cf.packages(), pkg):
					t.Errorf("%s: container %s runs %s, which Debian has in %s, but %s does not install it", p, c.Name, prog, pkg, cf.rel)
				}
			}
		}
	}
	if len(unknown) > 0 {
		cannotCheck(t, fmt.Sprintf("no package installed here has %s; install the packages the Containerfiles list to check them", strings.Join(unknown, ", ")))
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
