package handover

import (
	"os"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTakePassedUnsets checks that the LISTEN_* variables are gone after
// TakePassed, whether they were meant for this process or not, so that
// nothing the daemon starts inherits them.
func TestTakePassedUnsets(t *testing.T) {
	for _, env := range []map[string]string{
		{"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "broker:control"},
		{"LISTEN_PID": strconv.Itoa(os.Getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""},
		{"LISTEN_FDS": "1"},
	} {
		for k, v := range env {
			t.Setenv(k, v)
		}
		p, err := TakePassed(os.Getpid())
		require.NoError(t, err)
		assert.Nil(t, p)
		for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			_, ok := os.LookupEnv(k)
			assert.False(t, ok, "%s is still set", k)
		}
	}
}

// TestPassedRoles checks how passed descriptors are told apart by name,
// with the file descriptor store's clients, state and waiters among them.
func TestPassedRoles(t *testing.T) {
	for _, tt := range []struct {
		names []string
		roles []string // nil: an error containing err
		err   string
	}{
		{[]string{""}, []string{"broker"}, ""},
		{[]string{"one-socket.socket"}, []string{"broker"}, ""},
		{[]string{"control"}, []string{"control"}, ""},
		{[]string{"control", "broker"}, []string{"control", "broker"}, ""},
		{[]string{"broker", "control", "client", "client", "state"},
			[]string{"broker", "control", "client", "client", "state"}, ""},
		// A unit's socket without FileDescriptorName=, then the store.
		{[]string{"one-socket.socket", "client", "state"}, []string{"broker", "client", "state"}, ""},
		{[]string{"broker", "w1", "w42", "client"}, []string{"broker", roleWaiter, roleWaiter, "client"}, ""},
		// Not a waiter's name: the only other name is the broker socket.
		{[]string{"w0"}, []string{"broker"}, ""},
		{[]string{"broker", "w01"}, nil, `socket 1 is named "w01"`},
		{[]string{"broker", "state", "state"}, nil, `more than one descriptor named "state"`},
		{[]string{"", ""}, nil, "2 sockets passed and socket 0 has no name"},
		{[]string{"broker", "vhost"}, nil, `socket 1 is named "vhost"`},
	} {
		roles, err := passedRoles(tt.names)
		if tt.roles == nil {
			assert.ErrorContains(t, err, tt.err, "%q", tt.names)
			continue
		}
		require.NoError(t, err, "%q", tt.names)
		assert.Equal(t, tt.roles, roles, "%q", tt.names)
	}
}
