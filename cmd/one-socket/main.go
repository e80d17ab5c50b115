package main

import (
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/one-socket/one-socket/internal/broker"
)

func main() {
	runtime.GOMAXPROCS(1)
	path := os.Args[1]
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		panic(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b, err := broker.New(&broker.Config{Logger: log})
	if err != nil {
		panic(err)
	}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
		<-c
		b.Shutdown()
	}()
	b.Serve(ln)
	os.Remove(path)
}
