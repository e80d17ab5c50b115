package doc_test

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The Go blocks of doc/go.md are compiled as a user's program would be:
// in a module of their own that requires this one (replaced by the
// repository), so that the guide can use nothing a user cannot, such as
// internal packages, and cannot drift from the API.
//
// A block is either a whole file (it has a package clause) or top-level
// declarations. Whole files each become a package of their own. Blocks of
// declarations together make one package, each in a file of its own that
// imports what the block uses from guideImports, so the guide need not
// repeat import lists; they may use each other's declarations.

// guideImports are the packages a block of declarations may use without
// importing them, by the name it uses.
var guideImports = map[string]string{
	"bufio":       "bufio",
	"bytes":       "bytes",
	"context":     "context",
	"errors":      "errors",
	"exec":        "os/exec",
	"fmt":         "fmt",
	"io":          "io",
	"libspbroker": "github.com/one-socket/one-socket/libspbroker",
	"log":         "log",
	"net":         "net",
	"os":          "os",
	"signal":      "os/signal",
	"strings":     "strings",
	"sync":        "sync",
	"syscall":     "syscall",
	"time":        "time",
	"unix":        "golang.org/x/sys/unix",
}

const modulePath = "github.com/one-socket/one-socket"

// TestGoGuideCompiles runs go vet over the Go blocks of doc/go.md.
func TestGoGuideCompiles(t *testing.T) {
	const rel = "doc/go.md"
	guide := readMarkdown(t, repoRoot, rel)
	abs := filepath.Join(repoRoot, filepath.FromSlash(rel))
	dir := filepath.Join(workDir, "goguide")
	writeGuideModule(t, dir)

	n := 0
	for _, b := range guide.blocks {
		if b.info != "go" {
			continue
		}
		n++
		src := strings.Join(b.lines, "\n") + "\n"
		// A //line comment makes the compiler report positions in go.md.
		directive := fmt.Sprintf("//line %s:%d\n", abs, b.first)
		if isWholeFile(src) {
			writeFile(t, filepath.Join(dir, fmt.Sprintf("file%02d", n), "main.go"), directive+src)
			continue
		}
		imports, err := blockImports(directive + src)
		if err != nil {
			msg := strings.ReplaceAll(err.Error(), repoRoot+string(filepath.Separator), "")
			t.Errorf("%s:%d: a Go block must be a whole file or top-level declarations: %s", rel, b.first, msg)
			continue
		}
		var head strings.Builder
		head.WriteString("package guide\n\n")
		for _, imp := range imports {
			fmt.Fprintf(&head, "import %q\n", imp)
		}
		writeFile(t, filepath.Join(dir, "decls", fmt.Sprintf("block%02d.go", n)), head.String()+"\n"+directive+src)
	}
	if n == 0 {
		t.Fatalf("%s has no Go blocks (fenced with ```go): nothing to compile", rel)
	}

	cmd := exec.Command("go", "vet", "./...")
	cmd.Dir = dir
	// Everything comes from the repository and the module cache.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		report := strings.ReplaceAll(string(out), repoRoot+string(filepath.Separator), "")
		t.Fatalf("the Go blocks of %s do not compile against the module (go vet in a module that requires it):\n%s", rel, report)
	}
}

// isWholeFile reports whether src starts, after comments, with a package
// clause.
func isWholeFile(src string) bool {
	f, err := parser.ParseFile(token.NewFileSet(), "", src, parser.PackageClauseOnly)
	return err == nil && f.Name != nil
}

// blockImports parses src as top-level declarations and returns the import
// paths of the guideImports it uses, sorted. Positions in its errors
// follow src's //line comment.
func blockImports(src string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), "block.go", "package guide\n"+src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok {
				if path, ok := guideImports[id.Name]; ok {
					used[path] = true
				}
			}
		}
		return true
	})
	var paths []string
	for p := range used {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, nil
}

// writeGuideModule writes the go.mod and go.sum of a module that requires
// this one, replaced by the repository, with this module's requirements
// and checksums so that nothing needs fetching.
func writeGuideModule(t *testing.T, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	goVersion, requires := readGoMod(t)
	var mod strings.Builder
	fmt.Fprintf(&mod, "module example.com/goguide\n\ngo %s\n\nrequire %s v0.0.0\n\n", goVersion, modulePath)
	for _, r := range requires {
		fmt.Fprintf(&mod, "require %s\n", r)
	}
	fmt.Fprintf(&mod, "\nreplace %s => %q\n", modulePath, repoRoot)
	writeFile(t, filepath.Join(dir, "go.mod"), mod.String())
	sum, err := os.ReadFile(filepath.Join(repoRoot, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "go.sum"), string(sum))
}

// readGoMod returns the go version and the requirements ("path version")
// of the repository's go.mod.
func readGoMod(t *testing.T) (goVersion string, requires []string) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inBlock := false
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		switch {
		case strings.HasPrefix(line, "go "):
			goVersion = strings.TrimSpace(strings.TrimPrefix(line, "go "))
		case line == "require (":
			inBlock = true
		case inBlock && line == ")":
			inBlock = false
		case inBlock && line != "":
			requires = append(requires, line)
		case strings.HasPrefix(line, "require "):
			requires = append(requires, strings.TrimSpace(strings.TrimPrefix(line, "require ")))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if goVersion == "" {
		t.Fatal("go.mod has no go line")
	}
	return goVersion, requires
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
