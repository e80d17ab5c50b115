package logsafe

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"vhost-user/blk0":          "vhost-user/blk0",
		"a$(reboot)":               `a\x24\x28reboot\x29`,
		"x\nmsg=forged level=WARN": `x\x0amsg\x3dforged\x20level\x3dWARN`,
		"`id`; rm -rf /":           `\x60id\x60\x3b\x20rm\x20-rf\x20/`,
		"\x00\xff":                 `\x00\xff`,
		"é":                        `\xc3\xa9`,
		"":                         `\x`,
		strings.Repeat("k", 65):    strings.Repeat("k", 64) + "...",
	} {
		assert.Equal(t, want, Key([]byte(in)), "%q", in)
	}
}

// FuzzKey checks what Key makes of any key: printable ASCII only, which
// the text handler writes as one line, one key= field, nothing quoted.
func FuzzKey(f *testing.F) {
	f.Add([]byte("a\nb=c \"d\""))
	f.Add([]byte("\x1b[31mred\x1b[0m\rlevel=ERROR"))
	f.Fuzz(func(t *testing.T, key []byte) {
		for _, c := range []byte(Key(key)) {
			if c <= ' ' || c >= 0x7f {
				t.Fatalf("key %q escaped as %q, with byte %#x", key, Key(key), c)
			}
		}
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}})).Info("m", "key", Key(key))
		line := buf.String()
		if strings.Count(line, "\n") != 1 || strings.Count(line, "=") != 3 || strings.Contains(line, `"`) {
			t.Fatalf("key %q logged as %q", key, line)
		}
	})
}
