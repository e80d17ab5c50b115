package doc_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// manPage is a manual page in man(7) markup, read line by line.
type manPage struct {
	rel   string
	lines []string
}

func readManPage(t *testing.T, rel string) *manPage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return &manPage{rel: rel, lines: strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")}
}

var (
	roffEscapes = strings.NewReplacer(`\-`, "-", `\fB`, "", `\fI`, "", `\fR`, "", `\fP`, "",
		`\(aq`, "'", `\(dq`, `"`, `\(em`, "--", `\e`, `\`, `\&`, "", `\|`, "", `\%`, "")
	roffMacro = regexp.MustCompile(`^\.([A-Za-z]+)\s*`)
)

// roffText is the text of a line as a reader sees it: escapes resolved,
// a leading macro name and quotes dropped. Comments are empty.
func roffText(line string) string {
	if strings.HasPrefix(line, `.\"`) || strings.HasPrefix(line, `'\"`) {
		return ""
	}
	line = roffMacro.ReplaceAllString(line, "")
	return strings.ReplaceAll(roffEscapes.Replace(line), `"`, "")
}

// section returns the indexes of the lines of section name (.SH name), up
// to the next .SH.
func (m *manPage) section(name string) []int {
	var idx []int
	in := false
	for i, l := range m.lines {
		if strings.HasPrefix(l, ".SH ") {
			if in {
				break
			}
			in = strings.Trim(strings.TrimPrefix(l, ".SH "), `"`) == name
			continue
		}
		if in {
			idx = append(idx, i)
		}
	}
	return idx
}

// tags returns the tag lines of a section's .TP paragraphs: the line that
// follows each .TP, as indexes.
func (m *manPage) tags(section string) []int {
	var idx []int
	lines := m.section(section)
	for k, i := range lines {
		if strings.TrimSpace(m.lines[i]) == ".TP" && k+1 < len(lines) {
			idx = append(idx, lines[k+1])
		}
	}
	return idx
}
