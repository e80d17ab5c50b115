// Command one-socket is the SocketPair Broker daemon. It listens on one
// Unix stream socket and gives two clients that send a GET_PAIR with the
// same key and compatible modes the two ends of a fresh socketpair.
//
// This package is the daemon's shell: flags and environment (flags.go),
// the socket file (listen.go), process limits (runtime.go), signals and
// logging (here). The pairing itself is internal/broker's.
//
// See doc/one-socket.md for the operation guide.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/one-socket/one-socket/internal/broker"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole daemon; it returns the exit status: 0 after a clean
// stop by signal (or for --help and --version), 2 for a bad command line,
// 1 for anything that kept the broker from starting or running.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if cfg.version {
		fmt.Fprintf(stdout, "one-socket %s\n", versionString())
		return 0
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	setGOMAXPROCS()
	nofile, err := raiseNoFile()
	if err != nil {
		log.Warn("cannot raise the descriptor limit", "limit", nofile, "err", err)
	}

	path, err := socketPath(cfg.socket, os.Getenv, os.Geteuid())
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	b, err := broker.New(&broker.Config{
		Logger:           log,
		HandshakeTimeout: cfg.handshakeTimeout,
		MaxConns:         cfg.maxConns,
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}

	// Signals are caught before the socket exists, so that none arriving
	// in between can kill the process and leave the file behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	ln, sock, err := listen(path, cfg.socketMode)
	if err != nil {
		log.Error("cannot start", "socket", path, "err", err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- b.Serve(ln) }()

	startArgs := []any{"socket", path}
	if !sock.abstract {
		startArgs = append(startArgs, "mode", fmt.Sprintf("%04o", uint32(cfg.socketMode)))
	}
	startArgs = append(startArgs, "max_conns", b.MaxConns(), "nofile", nofile,
		"handshake_timeout", cfg.handshakeTimeout, "pid", os.Getpid(), "version", versionString())
	log.Info("one-socket started", startArgs...)

	status := 0
	var why any
	select {
	case sig := <-sigs:
		// A second signal now takes its default action, so an operator
		// can still kill a broker whose shutdown hangs.
		signal.Stop(sigs)
		why = sig.String()
		// Remove the file before closing the listener: while the listener
		// is open no other broker can take the path for stale, so the file
		// checked is ours; new clients then find no socket at all rather
		// than one that refuses them.
		removeSocket(log, sock)
		b.Shutdown()
		<-served
	case err := <-served:
		// Serve returns on its own only when the engine failed.
		signal.Stop(sigs)
		why = err.Error()
		status = 1
		log.Error("broker failed", "err", err)
		removeSocket(log, sock)
	}

	s := b.Stats()
	var protoErrs uint64
	for _, n := range s.ProtocolErrors {
		protoErrs += n
	}
	log.Info("one-socket stopped", "reason", why,
		"accepted", s.Accepted, "paired", s.Paired, "refused", s.Refused,
		"timed_out", s.TimedOut, "vanished", s.Vanished, "protocol_errors", protoErrs)
	return status
}

// removeSocket removes the socket file if it is still ours, and warns if
// it cannot or if somebody replaced it.
func removeSocket(log *slog.Logger, sock *socketFile) {
	ok, err := sock.remove()
	switch {
	case err != nil:
		log.Warn("cannot remove the socket file", "socket", sock.path, "err", err)
	case !ok:
		log.Warn("socket file was removed or replaced by someone else; leaving the path alone", "socket", sock.path)
	}
}
