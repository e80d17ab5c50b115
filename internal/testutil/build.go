package testutil

import (
	"fmt"
	"os/exec"
	"strings"
)

// BuildOptions are the choices Build leaves to its caller; nil is none.
type BuildOptions struct {
	Dir     string   // where go build runs (relative package paths start there); "" is the current directory
	Version string   // linked in as main.version, unless ""
	Flags   []string // further go build flags, such as -race
}

// Build runs go build -o out for pkgs (out a file, or a directory ending
// in a slash for several), returning an error with the compiler's output.
func Build(out string, opts *BuildOptions, pkgs ...string) error {
	if opts == nil {
		opts = &BuildOptions{}
	}
	args := append([]string{"build"}, opts.Flags...)
	if opts.Version != "" {
		args = append(args, "-ldflags=-X main.version="+opts.Version)
	}
	args = append(args, "-o", out)
	cmd := exec.Command("go", append(args, pkgs...)...)
	cmd.Dir = opts.Dir
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, output)
	}
	return nil
}
