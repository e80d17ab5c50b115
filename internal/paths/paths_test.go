package paths_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/one-socket/one-socket/internal/paths"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestBrokerSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		flag string
		env  map[string]string
		euid int
		want string
	}{
		{"flag wins", "/f.sock", map[string]string{"ONE_SOCKET_PATH": "/e.sock", "XDG_RUNTIME_DIR": "/x"}, 0, "/f.sock"},
		{"env before default", "", map[string]string{"ONE_SOCKET_PATH": "/e.sock"}, 0, "/e.sock"},
		{"root", "", map[string]string{"XDG_RUNTIME_DIR": "/x"}, 0, "/run/one.socket"},
		{"user", "", map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/one.socket"},
		{"empty env is unset", "", map[string]string{"ONE_SOCKET_PATH": "", "XDG_RUNTIME_DIR": "/x"}, 1000, "/x/one.socket"},
		{"abstract", "@one", nil, 1000, "@one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := paths.BrokerSocket(tc.flag, env(tc.env), tc.euid)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
	_, err := paths.BrokerSocket("", env(nil), 1000)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "ONE_SOCKET_PATH")
}

func TestControlSocket(t *testing.T) {
	for _, tc := range []struct {
		name, flag, broker string
		env                map[string]string
		want               string
	}{
		{"flag wins", "/c.ctl", "/run/one.socket", map[string]string{"ONE_SOCKET_CTL_PATH": "/e.ctl"}, "/c.ctl"},
		{"env", "", "/run/one.socket", map[string]string{"ONE_SOCKET_CTL_PATH": "/e.ctl"}, "/e.ctl"},
		{"beside root's socket", "", "/run/one.socket", nil, "/run/one-socket.ctl"},
		{"beside a user's socket", "", "/run/user/7/b.sock", nil, "/run/user/7/one-socket.ctl"},
		{"relative", "", "one.socket", nil, "one-socket.ctl"},
		{"relative dir", "", "d/one.socket", nil, "d/one-socket.ctl"},
		{"abstract broker: no default", "", "@one", nil, ""},
		{"abstract broker, env", "", "@one", map[string]string{"ONE_SOCKET_CTL_PATH": "@one.ctl"}, "@one.ctl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, paths.ControlSocket(tc.flag, tc.broker, env(tc.env)))
		})
	}
}
