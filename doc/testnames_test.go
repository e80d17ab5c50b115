package doc_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// A test, benchmark or fuzz target as a document names it.
	testMention = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*`)
	// Its declaration in a _test.go file.
	testDecl = regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)[A-Za-z0-9_]*)\(`)
)

// TestTestNames checks that every test, benchmark and fuzz target that
// README.md, doc/*.md and the manual pages name is declared in a _test.go
// file of the repository: a document that names the test showing a claim
// must not name one that was renamed or removed.
func TestTestNames(t *testing.T) {
	declared := map[string]bool{}
	err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != repoRoot:
			return filepath.SkipDir
		case d.IsDir() || !strings.HasSuffix(p, "_test.go"):
			return nil
		}
		b, err := os.ReadFile(p)
		for _, m := range testDecl.FindAllSubmatch(b, -1) {
			declared[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{"README.md"}
	for _, pattern := range []string{"doc/*.md", "doc/*.[1-8]"} {
		found, err := filepath.Glob(filepath.Join(repoRoot, filepath.FromSlash(pattern)))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range found {
			rel, _ := filepath.Rel(repoRoot, p)
			docs = append(docs, filepath.ToSlash(rel))
		}
	}
	for _, rel := range docs {
		data, err := os.ReadFile(filepath.Join(repoRoot, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, name := range testMention.FindAllString(line, -1) {
				if !declared[name] {
					t.Errorf("%s:%d: %s is no test of the repository", rel, i+1, name)
				}
			}
		}
	}
}
