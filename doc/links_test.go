package doc_test

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

var (
	// An inline link or image: [text](target) or [text](target "title").
	// The text may run over lines; the target may be in angle brackets.
	inlineLink = regexp.MustCompile(`!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>\n]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)`)
	// A link reference definition: [label]: target
	refDefinition = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)`)
	// An HTML link or image.
	htmlLink = regexp.MustCompile(`(?:href|src)="([^"]*)"`)
	// A target with a scheme (https:, mailto:) or a network path.
	absoluteTarget = regexp.MustCompile(`^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)`)
	// GitHub's line anchors on a file that is not Markdown: #L10, #L10-L20.
	lineAnchor = regexp.MustCompile(`^L\d+(?:-L\d+)?$`)
)

// link is one link found in a document.
type link struct {
	line   int
	target string
}

// links returns every link in f's prose, in order: inline links and
// images, reference definitions, and HTML href and src attributes.
func (f *mdFile) links() []link {
	text := f.prose()
	var out []link
	for _, re := range []*regexp.Regexp{inlineLink, refDefinition, htmlLink} {
		for _, m := range re.FindAllStringSubmatchIndex(text, -1) {
			target := strings.TrimSuffix(strings.TrimPrefix(text[m[2]:m[3]], "<"), ">")
			out = append(out, link{line: lineAt(text, m[2]), target: target})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].line < out[j].line })
	return out
}

// TestLinks checks that every relative link in README.md and doc/*.md
// names a file or directory of the repository, and that every #anchor
// names a heading of the Markdown file it points into, as GitHub makes
// anchors. Links to other sites are not followed.
func TestLinks(t *testing.T) {
	anchorCache := map[string]map[string]bool{}
	anchorsOf := func(rel string) map[string]bool {
		if a, ok := anchorCache[rel]; ok {
			return a
		}
		a := readMarkdown(t, repoRoot, rel).anchors()
		anchorCache[rel] = a
		return a
	}
	checked := 0
	for _, rel := range markdownFiles(t) {
		f := readMarkdown(t, repoRoot, rel)
		for _, l := range f.links() {
			checked++
			if msg := checkLink(rel, l.target, anchorsOf); msg != "" {
				t.Errorf("%s:%d: link to %q: %s", rel, l.line, l.target, msg)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no links found at all: the link scanner is broken")
	}
}

// checkLink returns what is wrong with target, a link in the document rel,
// or "" if nothing is.
func checkLink(rel, target string, anchorsOf func(string) map[string]bool) string {
	if target == "" {
		return "empty link target"
	}
	if absoluteTarget.MatchString(target) {
		return ""
	}
	p, frag, hasFrag := strings.Cut(target, "#")
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	unescaped, err := url.PathUnescape(p)
	if err != nil {
		return fmt.Sprintf("bad escape in the path: %v", err)
	}
	dest := rel // a bare #anchor points into the same file
	if unescaped != "" {
		if strings.HasPrefix(unescaped, "/") {
			// GitHub resolves a path from the repository's root.
			dest = path.Clean(strings.TrimPrefix(unescaped, "/"))
		} else {
			dest = path.Clean(path.Join(path.Dir(rel), unescaped))
		}
		if dest == ".." || strings.HasPrefix(dest, "../") {
			return "leads out of the repository"
		}
		fi, err := os.Stat(filepath.Join(repoRoot, filepath.FromSlash(dest)))
		if err != nil {
			return fmt.Sprintf("%s does not exist", dest)
		}
		if fi.IsDir() && hasFrag {
			return fmt.Sprintf("%s is a directory: an anchor means nothing there", dest)
		}
	}
	if !hasFrag {
		return ""
	}
	if frag == "" {
		return "empty anchor"
	}
	if !strings.HasSuffix(dest, ".md") {
		if lineAnchor.MatchString(frag) {
			return ""
		}
		return fmt.Sprintf("#%s: only line anchors (#L10) can be checked in %s", frag, dest)
	}
	anchor, err := url.PathUnescape(frag)
	if err != nil {
		return fmt.Sprintf("bad escape in the anchor: %v", err)
	}
	anchors := anchorsOf(dest)
	if anchors[anchor] {
		return ""
	}
	return fmt.Sprintf("no heading in %s has the anchor #%s%s", dest, anchor, suggest(anchor, anchors))
}

// suggest names the anchors of a file closest to a wrong one, to make a
// typo or a renamed heading quick to fix.
func suggest(want string, anchors map[string]bool) string {
	var close []string
	for a := range anchors {
		if strings.Contains(a, want) || strings.Contains(want, a) || sharedPrefix(a, want) >= 6 {
			close = append(close, "#"+a)
		}
	}
	if len(close) == 0 {
		return ""
	}
	sort.Strings(close)
	return " (did you mean " + strings.Join(close, " or ") + "?)"
}

func sharedPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestSlug pins the anchor rules against headings whose GitHub anchors are
// known, so that a change to slug cannot quietly make TestLinks lenient.
func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Running under systemd":             "running-under-systemd",
		"Threads, signals and fork":         "threads-signals-and-fork",
		"`--socket PATH`":                   "--socket-path",
		"GET_PAIR (client to broker)":       "get_pair-client-to-broker",
		"What it costs: 1044 bytes?":        "what-it-costs-1044-bytes",
		"[Links](x.md) and *emphasis*":      "links-and-emphasis",
		"Ünïcode stays":                     "ünïcode-stays",
		"Two  spaces":                       "two--spaces",
		"The runtime-free build":            "the-runtime-free-build",
		"Decision: keep our own socket 1.0": "decision-keep-our-own-socket-10",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
	f := &mdFile{lines: []string{"# A", "## A", "text", "A", "=", "```", "# not a heading", "```"}}
	f.inCode = []bool{false, false, false, false, false, true, true, true}
	got := f.anchors()
	for _, want := range []string{"a", "a-1", "a-2"} {
		if !got[want] {
			t.Errorf("anchors of repeated headings: no #%s in %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Errorf("a line in a code block was taken for a heading: %v", got)
	}
}

// TestLinkScanner pins what the scanner finds and what it must skip.
func TestLinkScanner(t *testing.T) {
	f := &mdFile{lines: []string{
		"See [the guide](go.md#errors) and [a", // 1
		"link over two lines](one-socket.md#flags).",
		"`[code](not-a-link.md)` and ``[also](not.md)``",
		"![image](img.png \"title\")",
		"[ref]: security.md",
		"<a href=\"c-library.md\">html</a>",
		"```",
		"[in a block](nope.md)",
		"```",
		"[`code` text](protocol.md)",
	}}
	f.inCode = make([]bool, len(f.lines))
	f.inCode[6], f.inCode[7], f.inCode[8] = true, true, true
	var got []string
	for _, l := range f.links() {
		got = append(got, fmt.Sprintf("%d:%s", l.line, l.target))
	}
	want := []string{"1:go.md#errors", "2:one-socket.md#flags", "4:img.png", "5:security.md", "6:c-library.md", "10:protocol.md"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("links found:\n got %v\nwant %v", got, want)
	}
}
