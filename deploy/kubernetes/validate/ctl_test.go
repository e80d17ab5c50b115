package validate

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ctlFlag is a flag as one-socketctl --help describes it.
type ctlFlag struct {
	value    bool     // it takes a value ("--name VALUE")
	commands []string // the commands it is for, when its text names them ("pair: ..."); nil: any
}

var (
	// "--name VALUE" or "-h" in a flag's synopsis.
	helpFlag = regexp.MustCompile(`--?([a-zA-Z][a-zA-Z0-9-]*)( [A-Z][A-Z0-9_]*)?`)
	// A description that starts by naming its commands: "drop, pair: ...".
	helpFlagCommands = regexp.MustCompile(`^([a-z-]+(?:, [a-z-]+)*): `)
)

// ctlHelp runs the one-socketctl built from this checkout with --help and
// reads its commands and flags.
func ctlHelp(t *testing.T) (commands []string, flags map[string]ctlFlag) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binaries(t), Ctl), "--help").Output()
	require.NoError(t, err)
	flags = map[string]ctlFlag{}
	section := ""
	type described struct{ names, text string }
	var pending []described
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case l == "":
			section = ""
		case !strings.HasPrefix(l, " "):
			section = l
		case strings.HasPrefix(section, "Commands") && strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   "):
			commands = append(commands, strings.Fields(l)[0])
		case strings.HasPrefix(section, "Flags") && strings.HasPrefix(strings.TrimSpace(l), "-"):
			// The synopsis, then two blanks or more, then the text.
			names, text, _ := strings.Cut(strings.TrimSpace(l), "  ")
			pending = append(pending, described{names, strings.TrimSpace(text)})
		}
	}
	// The commands are known only once the help is read.
	for _, d := range pending {
		var only []string
		if m := helpFlagCommands.FindStringSubmatch(d.text); m != nil {
			only = strings.Split(m[1], ", ")
			for _, c := range only {
				if !slices.Contains(commands, c) {
					only = nil
					break
				}
			}
		}
		for _, m := range helpFlag.FindAllStringSubmatch(d.names, -1) {
			flags[m[1]] = ctlFlag{value: m[2] != "", commands: only}
		}
	}
	require.True(t, len(commands) >= 5 && len(flags) >= 5 && slices.Contains(commands, "pair"),
		"one-socketctl --help lists commands %q and %d flags; has its layout changed?\n%s", commands, len(flags), out)
	return commands, flags
}

// TestCtlFlags checks every command line of one-socketctl in the manifests
// (a container's command, a probe, or a line of a script) against what
// one-socketctl --help lists: its command exists, each flag exists and is
// for that command, a flag that takes a value has one, written
// --name=value outside scripts, and a flag that takes none has none. Then
// it runs each command line that is not in a script with --version before
// "--", which makes one-socketctl parse every flag and value and exit
// without doing anything.
func TestCtlFlags(t *testing.T) {
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	commands, flags := ctlHelp(t)

	calls := d.CtlCalls()
	var found []string
	for _, c := range calls {
		found = append(found, c.Pod.Name+"/"+c.Container.Name+" "+c.Where)
	}
	// That the search finds them all: the broker's probes, the echo
	// server's loop and both vhost-user-blk pods.
	assert.ElementsMatch(t, []string{
		"one-socket/one-socket readiness probe", "one-socket/one-socket liveness probe",
		"echo-server/echo-server script",
		"vhost-user-blk-storage/storage command", "vhost-user-blk-vm/vm command",
	}, found)

	for _, c := range calls {
		for _, msg := range ctlProblems(c, commands, flags) {
			t.Error(msg)
		}
		if c.Script() {
			continue
		}
		args := slices.Clone(c.Args)
		at := slices.Index(args, "--")
		if at < 0 {
			at = len(args)
		}
		args = slices.Insert(args, at, "--version")
		out, err := exec.Command(filepath.Join(binaries(t), Ctl), args...).CombinedOutput()
		assert.NoError(t, err, "%s: one-socketctl %q: %s", c, args, out)
		assert.True(t, strings.HasPrefix(string(out), Ctl+" "), "%s: one-socketctl %q printed %s", c, args, out)
	}
}

// ctlProblems checks one command line against one-socketctl --help.
func ctlProblems(c *CtlCall, commands []string, flags map[string]ctlFlag) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, c.String()+": "+fmt.Sprintf(format, args...))
	}
	var command string
	var used []string
	args := c.Args
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			if command == "" {
				command = a
			}
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f, ok := flags[name]
		switch {
		case !ok:
			bad("one-socketctl --help lists no flag --%s", name)
			continue
		case f.value && !hasValue && c.Script():
			i++ // the shell's "--flag VALUE"
			if i == len(args) {
				bad("--%s needs a value", name)
			}
		case f.value && !hasValue:
			bad("--%s takes a value: write --%s=VALUE", name, name)
		case !f.value && hasValue:
			bad("--%s takes no value", name)
		}
		used = append(used, name)
	}
	if !slices.Contains(commands, command) {
		bad("one-socketctl --help lists no command %q", command)
		return problems
	}
	for _, name := range used {
		if only := flags[name].commands; only != nil && !slices.Contains(only, command) {
			bad("--%s is for %s only, says one-socketctl --help", name, strings.Join(only, ", "))
		}
	}
	return problems
}

// TestCtlProblems alters command lines of one-socketctl in the manifests
// and expects ctlProblems to object, against one-socketctl's real --help.
func TestCtlProblems(t *testing.T) {
	commands, flags := ctlHelp(t)
	cases := []struct {
		name, file, old, new, msg string
	}{
		{"flag it does not have", "one-socket.yaml", `"--timeout=3s", "status"]
            periodSeconds: 10`, `"--timeout=3s", "--retry=1s", "status"]
            periodSeconds: 10`, "readiness probe: one-socketctl --help lists no flag --retry"},
		{"value as a second word", "one-socket.yaml", `"--timeout=3s", "status"]
            periodSeconds: 10`, `"--timeout", "3s", "status"]
            periodSeconds: 10`, "readiness probe: --timeout takes a value: write --timeout=VALUE"},
		{"value for a boolean", "one-socket.yaml", `"--timeout=3s", "status"]
            periodSeconds: 10`, `"--timeout=3s", "--json=yes", "status"]
            periodSeconds: 10`, "readiness probe: --json takes no value"},
		{"flag of another command", "one-socket.yaml", `"--timeout=3s", "status"]
            periodSeconds: 10`, `"--timeout=3s", "--mode=server", "status"]
            periodSeconds: 10`, "readiness probe: --mode is for pair only"},
		{"command it does not have", "one-socket.yaml", `"--timeout=3s", "status"]
            periodSeconds: 10`, `"--timeout=3s", "health"]
            periodSeconds: 10`, `readiness probe: one-socketctl --help lists no command "health"`},
		{"misspelt flag in a script", "example.yaml", `pair --mode "$PAIR_MODE"`, `pair --mod "$PAIR_MODE"`,
			"script: one-socketctl --help lists no flag --mod"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := readManifests(t)
			files[c.file] = []byte(replaceOnce(t, string(files[c.file]), c.old, c.new))
			objs, err := ParseAll(files)
			require.NoError(t, err)
			d, _ := Check(objs, want(t))
			var all []string
			for _, call := range d.CtlCalls() {
				all = append(all, ctlProblems(call, commands, flags)...)
			}
			assert.Contains(t, strings.Join(all, "\n"), c.msg)
		})
	}
}
