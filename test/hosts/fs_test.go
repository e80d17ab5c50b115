package hosts

// vhost-user-fs: QEMU 7.2's C virtiofsd (qemu-system-common installs it
// outside PATH) shares a directory, the guest mounts it and reads a file.

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestVirtiofsListeningFD: virtiofsd --fd=3 wants a listening socket,
// which --listening-fd gives it; QEMU's vhost-user-fs-pci takes the
// brokered socket as fd 3. virtiofsd serves one connection and exits.
func TestVirtiofsListeningFD(t *testing.T) {
	g := needGuest(t, virtiofsd)
	if os.Geteuid() != 0 {
		// It sandboxes itself in namespaces of its own, and switches
		// credentials per request: root only.
		cannotRun(t, "virtiofsd must run as root")
	}
	b := startBroker(t)

	share := t.TempDir()
	content := make([]byte, 32)
	rand.Read(content)
	require.NoError(t, os.WriteFile(filepath.Join(share, "known"), content, 0o644))

	back := b.pair(t, "fs", "server", []string{"--listening-fd"},
		virtiofsd.path(t), "--fd=3", "-o", "source="+share, "-o", "cache=none")
	front := b.pair(t, "fs", "client", nil, g.argv(vm{
		job:    "fs",
		params: map[string]string{"tag": "hostsfs", "file": "known"},
		devices: []string{"-chardev", "socket,id=c0,fd=3",
			"-device", "vhost-user-fs-pci,chardev=c0,tag=hostsfs"},
	})...)
	requireExit(t, front, 0)
	require.Equal(t, []string{"fs " + hex.EncodeToString(content)}, said(t, front), "what the guest read from the share")
	requireExit(t, back, 0)
}
