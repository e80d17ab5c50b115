// Command one-socketctl controls a running one-socket daemon through its
// control socket (status, list, drop, log-level, stop, version, and top
// for a live view), and gets pairs from the broker for the shell: "pair"
// bridges one to standard input and output, or hands it to a command as
// descriptor 3.
//
// cli.go parses the command line, commands.go speaks the control protocol
// (internal/control) and prints its answers, top.go draws "top", pair.go
// and exec.go do "pair".
//
// See doc/one-socketctl.md for the guide and doc/one-socketctl.8 for the
// manual page.
package main

import (
	"io"
	"os"

	buildversion "github.com/one-socket/one-socket/internal/version"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"), as for
// the daemon; when empty, the build information decides.
var version string

func main() {
	if len(os.Args) > 1 && os.Args[1] == shimCommand {
		os.Exit(execWithPID(os.Args[2:], os.Stderr))
	}
	a := &app{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		getenv: os.Getenv,
		euid:   os.Geteuid(),
	}
	os.Exit(a.run(os.Args[1:]))
}

// app is one run of the tool, with its environment as parameters so that
// tests can run it in-process.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	euid   int
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func versionString() string { return buildversion.String(version) }
