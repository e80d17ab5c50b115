package doc_test

import (
	"regexp"
	"sort"
	"strings"
	"testing"
)

// foreignFlags are the options of other programs that the daemon's and the
// control tool's documents mention, with the program each belongs to. A
// flag that is neither one-socket's, nor one-socketctl's, nor listed here
// is a mistake in the documents.
var foreignFlags = map[string]string{
	"fdname":          "systemd-socket-activate",
	"now":             "systemctl enable",
	"cflags":          "pkg-config",
	"libs":            "pkg-config",
	"prefix":          "meson setup",
	"pkg-config-path": "meson setup",
	"warnings":        "man (in the manual pages' check comments)",
	"fd":              "virtiofsd",
	"kill-who":        "systemctl kill",
	"offline":         "systemd-analyze security",
	"online":          "test/systemd/security.sh",
}

// hiddenDaemonFlags are flags the daemon takes but --help does not print,
// each with the output that proves the daemon still takes it.
var hiddenDaemonFlags = map[string]*regexp.Regexp{
	// The probe an upgrade runs on the new binary: it prints the version
	// of the handover format.
	"handover-version": regexp.MustCompile(`^\d+\n$`),
	// The other probe: whether the new binary would start with the
	// daemon's flags; alone, it checks the defaults and prints nothing.
	"handover-check": regexp.MustCompile(`^$`),
}

var (
	// A long option as text mentions it: --name, not "--" alone.
	flagMention = regexp.MustCompile(`(?:^|[^\w-])--([a-zA-Z][a-zA-Z0-9-]*)`)
	// A flag in one-socket --help: "  --name ...".
	daemonHelpFlag = regexp.MustCompile(`(?m)^  --([a-z][a-z0-9-]*)`)
	// A definition-list term in one-socket.md's Flags section.
	flagTerm = regexp.MustCompile("^`--([a-z][a-z0-9-]*)")
)

// stringSet is a set of names, printed sorted.
type stringSet map[string]bool

// union returns a set of every name in sets.
func union(sets ...stringSet) stringSet {
	u := stringSet{}
	for _, set := range sets {
		for f := range set {
			u[f] = true
		}
	}
	return u
}

// keys returns the set of m's keys.
func keys[V any](m map[string]V) stringSet {
	s := stringSet{}
	for k := range m {
		s[k] = true
	}
	return s
}

func (s stringSet) sorted() []string {
	var out []string
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flagsIn returns the long options text mentions, without their dashes.
func flagsIn(text string) []string {
	var out []string
	for _, m := range flagMention.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// daemonFlags returns the flags one-socket --help prints.
func daemonFlags(t *testing.T) stringSet {
	t.Helper()
	help := run(t, "one-socket", "--help")
	flags := stringSet{}
	for _, m := range daemonHelpFlag.FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
	}
	if len(flags) < 5 {
		t.Fatalf("one-socket --help lists %d flags; is the parser here out of date?\n%s", len(flags), help)
	}
	return flags
}

// ctlHelp returns the commands and the flags one-socketctl --help prints.
func ctlHelp(t *testing.T) (commands, flags stringSet) {
	t.Helper()
	help := run(t, "one-socketctl", "--help")
	commands, flags = stringSet{}, stringSet{}
	section := ""
	for _, l := range strings.Split(help, "\n") {
		switch {
		case l == "":
			section = ""
		case !strings.HasPrefix(l, " "):
			section = l
		case strings.HasPrefix(section, "Commands"):
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") {
				commands[f[0]] = true
			}
		case strings.HasPrefix(section, "Flags"):
			for _, f := range flagsIn(strings.SplitN(strings.TrimSpace(l), "  ", 2)[0]) {
				flags[f] = true
			}
		}
	}
	if len(commands) < 5 || len(flags) < 3 {
		t.Fatalf("one-socketctl --help lists %d commands and %d flags; is the parser here out of date?\n%s",
			len(commands), len(flags), help)
	}
	return commands, flags
}

// place is where in a document a list of names was found.
type place struct {
	rel  string // the document
	part string // which part of it: "flag table", "Flags section", ...
}

// compare reports, as errors of t, each name that want has and got lacks,
// and each name got has that neither want nor also has. got maps the
// names found at p to their lines; source is the program that decides.
// kind is "flag" or "command".
func compare(t *testing.T, p place, got map[string]int, want, also stringSet, kind, source string) {
	t.Helper()
	for _, name := range want.sorted() {
		if _, ok := got[name]; !ok {
			t.Errorf("%s, %s: %s is missing, and %s prints it", p.rel, p.part, spell(kind, name), source)
		}
	}
	var unknown []string
	for name := range got {
		if !want[name] && !also[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		t.Errorf("%s:%d: %s: %s is not a %s that %s prints", p.rel, got[name], p.part, spell(kind, name), kind, source)
	}
}

// subset reports each name of got that is not in allowed.
func subset(t *testing.T, p place, got map[string]int, allowed stringSet, kind, source string) {
	t.Helper()
	compare(t, p, got, stringSet{}, allowed, kind, source)
}

// spell writes a name as the documents do: a flag with its dashes.
func spell(kind, name string) string {
	if kind == "flag" {
		return "--" + name
	}
	return name
}

// TestDaemonFlags checks the daemon's documents against one-socket --help:
// the Flags section of doc/one-socket.md and the OPTIONS of
// doc/one-socket.8 each describe exactly the flags it prints;
// the synopses name no other; and every --flag any of them mentions is a
// flag of one-socket, of one-socketctl, or of a program in foreignFlags
// (README.md included, which keeps no flag table of its own).
func TestDaemonFlags(t *testing.T) {
	flags := daemonFlags(t)
	_, ctlFlags := ctlHelp(t)
	withHelp := stringSet{"help": true}
	for f := range flags {
		withHelp[f] = true
	}

	readme := readMarkdown(t, repoRoot, "README.md")

	guide := readMarkdown(t, repoRoot, "doc/one-socket.md")
	terms := map[string]int{}
	for _, i := range guide.section("Flags") {
		if m := flagTerm.FindStringSubmatch(guide.lines[i]); m != nil {
			terms[m[1]] = i + 1
		}
	}
	compare(t, place{"doc/one-socket.md", "Flags section"}, terms, flags, withHelp, "flag", "one-socket --help")
	if len(guide.blocks) == 0 || !strings.HasPrefix(guide.blocks[0].lines[0], "one-socket ") {
		t.Errorf("doc/one-socket.md: the first code block should be the synopsis, starting with \"one-socket \"")
	} else {
		subset(t, place{"doc/one-socket.md", "synopsis"}, blockFlags(guide.blocks[0]), withHelp, "flag", "one-socket --help")
	}

	man := readManPage(t, "doc/one-socket.8")
	options := map[string]int{}
	for _, i := range man.tags("OPTIONS") {
		for _, f := range flagsIn(roffText(man.lines[i])) {
			options[f] = i + 1
		}
	}
	compare(t, place{"doc/one-socket.8", "OPTIONS"}, options, flags, withHelp, "flag", "one-socket --help")
	synopsis := map[string]int{}
	for _, i := range man.section("SYNOPSIS") {
		for _, f := range flagsIn(roffText(man.lines[i])) {
			synopsis[f] = i + 1
		}
	}
	subset(t, place{"doc/one-socket.8", "SYNOPSIS"}, synopsis, withHelp, "flag", "one-socket --help")

	known := union(withHelp, ctlFlags, keys(hiddenDaemonFlags), keys(foreignFlags))
	checkMentions(t, "README.md", readme.lines, nil, known)
	checkMentions(t, "doc/one-socket.md", guide.lines, nil, known)
	checkMentions(t, "doc/one-socket.8", man.lines, roffText, known)
}

// TestHiddenDaemonFlags checks that the daemon still takes the flags the
// documents mention but --help leaves out.
func TestHiddenDaemonFlags(t *testing.T) {
	for flag, want := range hiddenDaemonFlags {
		if out := run(t, "one-socket", "--"+flag); !want.MatchString(out) {
			t.Errorf("one-socket --%s printed %q, want a match for %s", flag, out, want)
		}
	}
}

// blockFlags returns the flags a code block mentions, by line.
func blockFlags(b codeBlock) map[string]int {
	got := map[string]int{}
	for k, l := range b.lines {
		for _, f := range flagsIn(l) {
			got[f] = b.first + k
		}
	}
	return got
}

// checkMentions reports every --flag in lines (prose and code alike) that
// is not in known. text, when not nil, turns a line into what a reader
// sees.
func checkMentions(t *testing.T, rel string, lines []string, text func(string) string, known stringSet) {
	t.Helper()
	for i, l := range lines {
		if text != nil {
			l = text(l)
		}
		for _, f := range flagsIn(l) {
			if !known[f] {
				t.Errorf("%s:%d: --%s is not a flag of one-socket or one-socketctl "+
					"(if it belongs to another program, add it to foreignFlags in doc/flags_test.go)", rel, i+1, f)
			}
		}
	}
}

// TestCtlCommands checks one-socketctl's documents against its --help:
// every command it prints is in the COMMANDS of doc/one-socketctl.8 and in
// the synopsis of doc/one-socketctl.md, neither names a command it does
// not have, the manual's OPTIONS are exactly its flags, and every --flag
// the two documents mention exists.
func TestCtlCommands(t *testing.T) {
	commands, ctlFlags := ctlHelp(t)
	flags := daemonFlags(t)

	man := readManPage(t, "doc/one-socketctl.8")
	entries := map[string]int{}
	for _, i := range man.tags("COMMANDS") {
		if f := strings.Fields(roffText(man.lines[i])); len(f) > 0 {
			entries[f[0]] = i + 1
		}
	}
	compare(t, place{"doc/one-socketctl.8", "COMMANDS"}, entries, commands, nil, "command", "one-socketctl --help")
	options := map[string]int{}
	for _, i := range man.tags("OPTIONS") {
		for _, f := range flagsIn(roffText(man.lines[i])) {
			options[f] = i + 1
		}
	}
	compare(t, place{"doc/one-socketctl.8", "OPTIONS"}, options, ctlFlags, nil, "flag", "one-socketctl --help")
	words := map[string]int{}
	for _, i := range man.section("SYNOPSIS") {
		l := man.lines[i]
		if strings.HasPrefix(l, ".B ") {
			if w := roffText(l); !strings.HasPrefix(w, "-") && w != "one-socketctl" {
				words[w] = i + 1
			}
		}
	}
	subset(t, place{"doc/one-socketctl.8", "SYNOPSIS"}, words, commands, "command", "one-socketctl --help")

	guide := readMarkdown(t, repoRoot, "doc/one-socketctl.md")
	if len(guide.blocks) == 0 || !strings.HasPrefix(guide.blocks[0].lines[0], "one-socketctl ") {
		t.Fatalf("doc/one-socketctl.md: the first code block should be the synopsis, starting with \"one-socketctl \"")
	}
	synopsis := guide.blocks[0]
	named := map[string]int{}
	for k, l := range synopsis.lines {
		for _, w := range strings.FieldsFunc(l, func(r rune) bool { return strings.ContainsRune(" \t|[]", r) }) {
			if w == strings.ToLower(w) && !strings.HasPrefix(w, "-") && w != "one-socketctl" && w != "..." {
				named[w] = synopsis.first + k
			}
		}
	}
	compare(t, place{"doc/one-socketctl.md", "synopsis"}, named, commands, nil, "command", "one-socketctl --help")
	subset(t, place{"doc/one-socketctl.md", "synopsis"}, blockFlags(synopsis), ctlFlags, "flag", "one-socketctl --help")

	known := union(ctlFlags, flags, keys(foreignFlags))
	checkMentions(t, "doc/one-socketctl.md", guide.lines, nil, known)
	checkMentions(t, "doc/one-socketctl.8", man.lines, roffText, known)
}

// TestFlagMention pins what counts as mentioning a flag.
func TestFlagMention(t *testing.T) {
	for text, want := range map[string]string{
		"use `--socket PATH` or --log-level=debug": "socket log-level",
		"end options with -- and then --x":         "x",
		"|---|---|":                                "",
		"a--b and sp_broker--thing":                "",
		"(--max-wait)":                             "max-wait",
	} {
		if got := strings.Join(flagsIn(text), " "); got != want {
			t.Errorf("flagsIn(%q) = %q, want %q", text, got, want)
		}
	}
	if got := roffText(`.BI \-\-socket\-mode " mode"`); got != "--socket-mode  mode" {
		t.Errorf("roffText = %q", got)
	}
}
