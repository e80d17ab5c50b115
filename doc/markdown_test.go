package doc_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// mdFile is a Markdown file split just far enough for the checks here:
// which lines are prose, which belong to fenced code blocks, and what
// those blocks hold. It is not a Markdown renderer; it follows CommonMark
// where the project's documents need it to and no further.
type mdFile struct {
	rel    string   // path relative to the repository root, with slashes
	lines  []string // the file's lines, without line ends
	inCode []bool   // the line is a fence or inside a fenced block
	blocks []codeBlock
}

// codeBlock is one fenced code block.
type codeBlock struct {
	info  string   // the fence's info string: "go", "sh", ...
	first int      // 1-based line number of the block's first content line
	lines []string // the content, without the fences
}

var fenceOpen = regexp.MustCompile("^ {0,3}(`{3,}|~{3,})\\s*([^`\\s]*)")

// readMarkdown reads the file at rel (relative to root) and finds its
// fenced code blocks.
func readMarkdown(t *testing.T, root, rel string) *mdFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.TrimSuffix(text, "\n")
	f := &mdFile{rel: rel, lines: strings.Split(text, "\n")}
	f.inCode = make([]bool, len(f.lines))
	for i := 0; i < len(f.lines); i++ {
		m := fenceOpen.FindStringSubmatch(f.lines[i])
		if m == nil {
			continue
		}
		fence := m[1]
		b := codeBlock{info: m[2], first: i + 2}
		f.inCode[i] = true
		i++
		for ; i < len(f.lines); i++ {
			f.inCode[i] = true
			if isFenceClose(f.lines[i], fence) {
				break
			}
			b.lines = append(b.lines, f.lines[i])
		}
		f.blocks = append(f.blocks, b)
	}
	return f
}

// isFenceClose reports whether line closes a block opened with fence: the
// same character, at least as many, and nothing else on the line.
func isFenceClose(line, fence string) bool {
	s := strings.TrimLeft(line, " ")
	if len(line)-len(s) > 3 {
		return false
	}
	n := 0
	for n < len(s) && s[n] == fence[0] {
		n++
	}
	return n >= len(fence) && strings.TrimSpace(s[n:]) == ""
}

// prose returns the file's text with every line of a fenced block emptied
// and the inside of every code span blanked, so that nothing quoted as
// code is taken for a link or a heading. Line and column positions stay
// where they were.
func (f *mdFile) prose() string {
	lines := make([]string, len(f.lines))
	for i, l := range f.lines {
		if !f.inCode[i] {
			lines[i] = l
		}
	}
	return blankCodeSpans(strings.Join(lines, "\n"))
}

// blankCodeSpans replaces the content of each code span with spaces. A
// span is a run of backticks closed by a run of the same length; it may
// cross a line end but not a blank line. An unclosed run is literal text.
func blankCodeSpans(s string) string {
	b := []byte(s)
	for i := 0; i < len(b); {
		if b[i] != '`' {
			i++
			continue
		}
		n := 0
		for i+n < len(b) && b[i+n] == '`' {
			n++
		}
		start := i + n
		end := -1
		for j := start; j < len(b); {
			if b[j] == '\n' && j+1 < len(b) && b[j+1] == '\n' {
				break // a paragraph ends: the run was not a span
			}
			if b[j] != '`' {
				j++
				continue
			}
			m := 0
			for j+m < len(b) && b[j+m] == '`' {
				m++
			}
			if m == n {
				end = j
				break
			}
			j += m
		}
		if end < 0 {
			i = start
			continue
		}
		for k := start; k < end; k++ {
			if b[k] != '\n' {
				b[k] = ' '
			}
		}
		i = end + n
	}
	return string(b)
}

// lineAt returns the 1-based line number of byte offset off in s.
func lineAt(s string, off int) int {
	return strings.Count(s[:off], "\n") + 1
}

var (
	atxHeading    = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	setextUnder   = regexp.MustCompile(`^ {0,3}(=+|-+)[ \t]*$`)
	htmlAnchor    = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	mdLinkInText  = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	htmlTag       = regexp.MustCompile(`<[^>]+>`)
	listOrQuote   = regexp.MustCompile(`^\s*([-*+>]|\d+[.)])\s`)
	tableDelimRow = regexp.MustCompile(`^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$`)
)

// anchors returns every anchor GitHub makes for f: one per heading, by
// GitHub's rules (see slug), numbered -1, -2, ... when a slug repeats,
// plus any explicit <a name> or id.
func (f *mdFile) anchors() map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	add := func(heading string) {
		s := slug(heading)
		if n, ok := seen[s]; ok {
			seen[s] = n + 1
			s += "-" + strconv.Itoa(n+1)
		} else {
			seen[s] = 0
		}
		out[s] = true
	}
	for i, l := range f.lines {
		if f.inCode[i] {
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		if m := atxHeading.FindStringSubmatch(l); m != nil {
			add(m[2])
			continue
		}
		// A setext heading: a paragraph line underlined with = or -.
		if i > 0 && setextUnder.MatchString(l) && !f.inCode[i-1] {
			prev := f.lines[i-1]
			if strings.TrimSpace(prev) != "" && !listOrQuote.MatchString(prev) &&
				!strings.Contains(prev, "|") && atxHeading.FindStringSubmatch(prev) == nil &&
				!tableDelimRow.MatchString(prev) {
				add(prev)
			}
		}
	}
	return out
}

// slug is GitHub's anchor for a heading: the heading's text as rendered
// (markup removed), lower-cased, with every character that is not a
// letter, a mark, a digit, '_', '-' or a space dropped, and each space
// turned into '-'.
func slug(heading string) string {
	text := mdLinkInText.ReplaceAllString(heading, "$1")
	text = htmlTag.ReplaceAllString(text, "")
	text = strings.NewReplacer("`", "", "*", "").Replace(strings.TrimSpace(text))
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) ||
			unicode.IsNumber(r) || unicode.In(r, unicode.Mn, unicode.Mc, unicode.Me):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// section returns the prose lines (0-based indexes) under the heading whose
// text is title, up to the next heading of the same or a higher level.
func (f *mdFile) section(title string) []int {
	var idx []int
	level := 0
	for i, l := range f.lines {
		m := atxHeading.FindStringSubmatch(l)
		if f.inCode[i] || m == nil {
			if level > 0 && !f.inCode[i] {
				idx = append(idx, i)
			}
			continue
		}
		if level > 0 && len(m[1]) <= level {
			break
		}
		if level == 0 && strings.TrimSpace(m[2]) == title {
			level = len(m[1])
		}
	}
	return idx
}
