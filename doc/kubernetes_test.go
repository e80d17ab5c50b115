package doc_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// yamlFlag is one "- --flag=value" item of a container's args list.
var yamlFlag = regexp.MustCompile(`^\s*-\s+(--\S+)\s*$`)

// daemonSetArgs returns the arguments deploy/kubernetes/one-socket.yaml
// gives the one-socket container, in order.
func daemonSetArgs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "kubernetes", "one-socket.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	in := false
	for l := range strings.Lines(string(data)) {
		l = strings.TrimRight(l, "\n")
		switch {
		case strings.Contains(l, `command: ["one-socket"]`):
			in = true
		case !in, strings.TrimSpace(l) == "args:", strings.HasPrefix(strings.TrimSpace(l), "#"):
		case yamlFlag.MatchString(l):
			args = append(args, yamlFlag.FindStringSubmatch(l)[1])
		default:
			return args
		}
	}
	return args
}

// TestKubernetesCommandLine checks that the daemon's command line that
// doc/kubernetes.md shows is the one the DaemonSet runs, flag for flag.
func TestKubernetesCommandLine(t *testing.T) {
	want := daemonSetArgs(t)
	if len(want) == 0 {
		t.Fatal("found no arguments of the one-socket container in deploy/kubernetes/one-socket.yaml")
	}
	f := readMarkdown(t, repoRoot, "doc/kubernetes.md")
	for _, b := range f.blocks {
		if len(b.lines) == 0 || !strings.HasPrefix(strings.TrimSpace(b.lines[0]), "one-socket --") {
			continue
		}
		got := strings.Fields(strings.Join(b.lines, " "))[1:]
		if !slices.Equal(got, want) {
			t.Errorf("doc/kubernetes.md:%d: the command line shows\n\t%s\nbut the DaemonSet runs\n\t%s",
				b.first, strings.Join(got, " "), strings.Join(want, " "))
		}
		return
	}
	t.Error("doc/kubernetes.md shows no one-socket command line")
}
