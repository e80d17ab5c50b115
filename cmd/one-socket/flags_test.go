package main

import (
	"io"
	"io/fs"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags(nil, io.Discard, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{
		socketMode:       0o660,
		logLevel:         slog.LevelInfo,
		logFormat:        "text",
		handshakeTimeout: 5e9,
	}, cfg, "defaults")

	cfg, err = parseFlags([]string{"--socket", "/s", "--socket-mode", "600", "--log-level", "DEBUG",
		"--handshake-timeout", "250ms", "--max-conns", "7", "--version",
		"--ctl-allow-uid", "1001,root", "--ctl-allow-uid", "7", "--open-abstract",
		"--log-format", "json"}, io.Discard, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{
		socket:           "/s",
		socketMode:       0o600,
		socketModeSet:    true,
		ctlAllow:         uidList{1001, 0, 7},
		openAbstract:     true,
		logLevel:         slog.LevelDebug,
		logFormat:        "json",
		handshakeTimeout: 250e6,
		maxConns:         7,
		version:          true,
	}, cfg)

	cfg, err = parseFlags([]string{"--ctl-socket", "", "--log-file", "/l", "--pidfile", "/p", "--detach"}, io.Discard, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{
		socketMode:       0o660,
		ctlSocketSet:     true,
		logLevel:         slog.LevelInfo,
		logFormat:        "text",
		logFile:          "/l",
		pidFile:          "/p",
		detach:           true,
		handshakeTimeout: 5e9,
	}, cfg, "an empty --ctl-socket counts as given")
}

func TestCtlSocketPath(t *testing.T) {
	for _, tt := range []struct {
		name   string
		args   []string
		env    map[string]string
		broker string
		want   string
	}{
		{"beside the broker socket", nil, nil, "/run/one.socket", "/run/one-socket.ctl"},
		{"flag", []string{"--ctl-socket", "/x.ctl"}, map[string]string{envCtlPath: "/e.ctl"}, "/run/one.socket", "/x.ctl"},
		{"env", nil, map[string]string{envCtlPath: "/e.ctl"}, "/run/one.socket", "/e.ctl"},
		{"flag none", []string{"--ctl-socket", "none"}, map[string]string{envCtlPath: "/e.ctl"}, "/run/one.socket", ""},
		{"flag empty", []string{"--ctl-socket="}, map[string]string{envCtlPath: "/e.ctl"}, "/run/one.socket", ""},
		{"env none", nil, map[string]string{envCtlPath: "none"}, "/run/one.socket", ""},
		{"abstract broker", nil, nil, "@one", ""},
		{"activated: only when named", nil, nil, "", ""},
		{"activated, named", []string{"--ctl-socket", "/x.ctl"}, nil, "", "/x.ctl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseFlags(tt.args, io.Discard, io.Discard)
			require.NoError(t, err)
			assert.Equal(t, tt.want, ctlSocketPath(cfg, tt.broker, func(k string) string { return tt.env[k] }))
		})
	}
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
