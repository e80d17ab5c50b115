package main

import (
	"io"
	"io/fs"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		name    string
		flag    string
		env     map[string]string
		euid    int
		want    string
		wantErr string
	}{
		{name: "flag wins over everything", flag: "/x/flag.socket",
			env: map[string]string{envSocketPath: "/x/env.socket", "XDG_RUNTIME_DIR": "/run/user/1000"}, euid: 1000,
			want: "/x/flag.socket"},
		{name: "abstract name from the flag", flag: "@one", euid: 0, want: "@one"},
		{name: "env var for root", env: map[string]string{envSocketPath: "/x/env.socket"}, euid: 0,
			want: "/x/env.socket"},
		{name: "env var for a user", env: map[string]string{envSocketPath: "rel/env.socket", "XDG_RUNTIME_DIR": "/run/user/1000"}, euid: 1000,
			want: "rel/env.socket"},
		{name: "root default ignores XDG", env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, euid: 0,
			want: "/run/one.socket"},
		{name: "empty env var counts as unset", env: map[string]string{envSocketPath: ""}, euid: 0,
			want: "/run/one.socket"},
		{name: "user default in XDG_RUNTIME_DIR", env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, euid: 1000,
			want: "/run/user/1000/one.socket"},
		{name: "user without XDG_RUNTIME_DIR", euid: 1000,
			wantErr: "XDG_RUNTIME_DIR is not set"},
		{name: "user with empty XDG_RUNTIME_DIR", env: map[string]string{"XDG_RUNTIME_DIR": ""}, euid: 1000,
			wantErr: "use --socket PATH or set ONE_SOCKET_PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string { return tt.env[k] }
			got, err := socketPath(tt.flag, getenv, tt.euid)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{
		socketMode:       0o660,
		logLevel:         slog.LevelInfo,
		handshakeTimeout: 5e9,
	}, cfg, "defaults")

	cfg, err = parseFlags([]string{"--socket", "/s", "--socket-mode", "600", "--log-level", "DEBUG",
		"--handshake-timeout", "250ms", "--max-conns", "7", "--version"}, io.Discard, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{
		socket:           "/s",
		socketMode:       0o600,
		logLevel:         slog.LevelDebug,
		handshakeTimeout: 250e6,
		maxConns:         7,
		version:          true,
	}, cfg)
}

func TestModeValue(t *testing.T) {
	for in, want := range map[string]fs.FileMode{
		"0660": 0o660, "660": 0o660, "0o600": 0o600, "0": 0, "777": 0o777, "0007": 0o007,
	} {
		var m modeValue
		require.NoError(t, m.Set(in), in)
		assert.Equal(t, want, fs.FileMode(m), in)
	}
	for _, in := range []string{"", "0o", "999", "0x1ff", "-1", "1000", "04755", "rw-rw----"} {
		var m modeValue
		assert.Error(t, m.Set(in), in)
	}
	m := modeValue(0o640)
	assert.Equal(t, "0640", m.String())
}

func TestLevelValue(t *testing.T) {
	for in, want := range map[string]slog.Level{
		"debug": slog.LevelDebug, "info": slog.LevelInfo, "WARN": slog.LevelWarn,
		"warning": slog.LevelWarn, "error": slog.LevelError,
	} {
		var l levelValue
		require.NoError(t, l.Set(in), in)
		assert.Equal(t, want, slog.Level(l), in)
	}
	var l levelValue
	assert.Error(t, l.Set("loud"))
	assert.Error(t, l.Set("info+2"), "only the four names")
	l = levelValue(slog.LevelWarn)
	assert.Equal(t, "warn", l.String())
}

func TestVersionString(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = ""
	assert.NotEmpty(t, versionString(), "falls back on the build information")
	version = "v9.9.9"
	assert.Equal(t, "v9.9.9", versionString())
}
