// Package paths decides where One Socket's sockets live when no flag says:
// the broker socket and, beside it, the control socket. The daemon and
// one-socketctl both use it, so that they agree without being told.
package paths

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Environment variables read for the defaults; the original daemon reads
// the same two.
const (
	EnvBrokerSocket  = "ONE_SOCKET_PATH"
	EnvControlSocket = "ONE_SOCKET_CTL_PATH"
)

// RootBrokerSocket is the default broker socket for root.
const RootBrokerSocket = "/run/one.socket"

// ControlSocketName is the file name of the default control socket, made
// in the broker socket's directory.
const ControlSocketName = "one-socket.ctl"

// BrokerSocket returns the broker socket path: flag if not empty, else
// $ONE_SOCKET_PATH, else RootBrokerSocket when euid is 0, else
// $XDG_RUNTIME_DIR/one.socket. Empty variables count as unset. It fails
// only for a user other than root without XDG_RUNTIME_DIR. getenv and euid
// are parameters so that tests can play any user.
func BrokerSocket(flag string, getenv func(string) string, euid int) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := getenv(EnvBrokerSocket); p != "" {
		return p, nil
	}
	if euid == 0 {
		return RootBrokerSocket, nil
	}
	dir := getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		return "", fmt.Errorf("no socket path: XDG_RUNTIME_DIR is not set, so there is no default for a user other than root; "+
			"use --socket PATH or set %s", EnvBrokerSocket)
	}
	return filepath.Join(dir, "one.socket"), nil
}

// ControlSocket returns the control socket path: flag if not empty, else
// $ONE_SOCKET_CTL_PATH, else ControlSocketName in brokerPath's directory
// (so /run/one-socket.ctl beside /run/one.socket).
//
// It returns "" when there is no default: the broker socket is abstract
// ("@name"), so it has no directory, and an abstract control socket would
// let anyone in the network namespace stop the broker. A control socket
// there must be asked for by name.
func ControlSocket(flag string, brokerPath string, getenv func(string) string) string {
	if flag != "" {
		return flag
	}
	if p := getenv(EnvControlSocket); p != "" {
		return p
	}
	if brokerPath == "" || strings.HasPrefix(brokerPath, "@") {
		return ""
	}
	return filepath.Join(filepath.Dir(brokerPath), ControlSocketName)
}
