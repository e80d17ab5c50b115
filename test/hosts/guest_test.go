package hosts

// The guest: Debian's cloud kernel (fetched by guest.sh) and an initramfs
// built here, once per run, from busybox-static, init.sh and the kernel's
// virtio modules. It boots under TCG: on this kind of machine /dev/kvm
// opens, but KVM guests hang early in boot.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/one-socket/one-socket/internal/testutil"
)

//go:embed init.sh
var initScript []byte

// guestModules are the modules the guest loads, with what they depend on.
var guestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "virtiofs"}

// guestMemory is the guest's RAM in MiB. It is a shared memfd, which
// every vhost-user back end needs in order to map it.
const guestMemory = 256

// guest is a kernel and an initramfs to boot it with.
type guest struct {
	qemu, kernel, initrd string
}

var (
	guestOnce sync.Once
	theGuest  *guest
	guestErr  error
	guestSkip string // why the guest cannot be had on this machine
)

// needGuest returns the guest, building it on first use. It skips the
// test if this machine cannot have one, or lacks one of the programs
// also named (checked together, so that one skip names every package).
func needGuest(t *testing.T, also ...program) *guest {
	t.Helper()
	need(t, append([]program{qemuSystem, busybox}, also...)...)
	qemu, bb := qemuSystem.path(t), busybox.path(t)
	guestOnce.Do(func() { theGuest, guestSkip, guestErr = makeGuest(qemu, bb) })
	if guestSkip != "" {
		cannotRun(t, "%s", guestSkip)
	}
	if guestErr != nil {
		t.Fatalf("preparing the guest: %v", guestErr)
	}
	return theGuest
}

// makeGuest fetches the kernel and builds the initramfs into workDir. A
// reason to skip comes back as skip; a failure as err.
func makeGuest(qemu, busybox string) (g *guest, skip string, err error) {
	fetch := exec.Command("sh", "guest.sh")
	var stderr bytes.Buffer
	fetch.Stderr = &stderr
	out, err := fetch.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 77 {
		return nil, fmt.Sprintf("no guest kernel: %s", strings.TrimSpace(stderr.String())), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("guest.sh: %v\n%s", err, stderr.String())
	}
	root := strings.TrimSpace(string(out))
	kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return nil, "", fmt.Errorf("want one kernel in %s/boot, found %q", root, kernels)
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	mods, err := resolveModules(filepath.Join(root, "lib", "modules", version), guestModules)
	if err != nil {
		return nil, "", err
	}
	initrd := filepath.Join(workDir, "initrd.gz")
	if err := writeInitramfs(initrd, busybox, mods); err != nil {
		return nil, "", err
	}
	return &guest{qemu: qemu, kernel: kernels[0], initrd: initrd}, "", nil
}

// module is a kernel module's name and contents, uncompressed.
type module struct {
	name string
	data []byte
}

// resolveModules finds the modules named under dir (the kernel's
// lib/modules/VERSION) and those they depend on, by the depends= entries
// of their .modinfo sections (an unpacked package has no modules.dep),
// and returns them in an order insmod can load them in. Those built into
// the kernel (modules.builtin) need no loading.
func resolveModules(dir string, names []string) ([]module, error) {
	files := map[string]string{} // module name -> file
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n, ok := moduleName(d.Name()); ok && !d.IsDir() {
			files[n] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			if n, ok := moduleName(filepath.Base(line)); ok {
				builtin[n] = true
			}
		}
	}
	var order []module
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		path, ok := files[name]
		if !ok && builtin[name] {
			return nil
		}
		if !ok {
			return fmt.Errorf("module %s is not in %s", name, dir)
		}
		data, err := readModule(path)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, module{name, data})
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName returns the name of the module in a file called base, as
// depends= lists it (with underscores for dashes).
func moduleName(base string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz"} {
		if n, ok := strings.CutSuffix(base, ext); ok {
			return strings.ReplaceAll(n, "-", "_"), true
		}
	}
	return "", false
}

// readModule returns a module file's contents, uncompressed: Debian 12's
// kernels ship plain .ko files, later ones .ko.xz, which busybox's insmod
// may not read.
func readModule(path string) ([]byte, error) {
	if !strings.HasSuffix(path, ".xz") {
		return os.ReadFile(path)
	}
	out, err := exec.Command(busybox.name, "xz", "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("decompressing %s: %v", path, err)
	}
	return out, nil
}

// moduleDepends returns the modules a module needs loaded first.
func moduleDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, entry := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(entry, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// writeInitramfs writes a gzipped newc cpio archive: busybox, the init
// script, the modules and, in /modules, the order to load them in.
func writeInitramfs(path, busybox string, mods []module) error {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.name)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w := &cpioWriter{w: zw}
	w.dir("bin")
	w.dir("dev")
	// The kernel opens /dev/console for init before anything mounts
	// devtmpfs; without the node init's output goes nowhere.
	w.entry("dev/console", 0o020600, nil, 5, 1)
	w.dir("lib")
	w.dir("lib/modules")
	w.file("bin/busybox", 0o755, bb)
	w.file("init", 0o755, initScript)
	w.file("modules", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	for _, m := range mods {
		w.file("lib/modules/"+m.name+".ko", 0o644, m.data)
	}
	w.entry("TRAILER!!!", 0, nil, 0, 0)
	if w.err != nil {
		return w.err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// cpioWriter writes the "newc" format the kernel unpacks into its rootfs.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) dir(name string)                      { c.entry(name, 0o040755, nil, 0, 0) }
func (c *cpioWriter) file(name string, perm int, b []byte) { c.entry(name, 0o100000|perm, b, 0, 0) }

// entry writes one header, name and contents, each padded to 4 bytes.
func (c *cpioWriter) entry(name string, mode int, data []byte, rdevMajor, rdevMinor int) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	pad(&b)
	b.Write(data)
	pad(&b)
	_, c.err = c.w.Write(b.Bytes())
}

func pad(b *bytes.Buffer) {
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
}

// vm describes a guest's run: the job init.sh does, its parameters, and
// QEMU's device options.
type vm struct {
	job     string
	params  map[string]string // hosts.NAME=VALUE on the kernel command line
	devices []string
}

// argv returns QEMU's command line for v.
func (g *guest) argv(v vm) []string {
	cmdline := []string{"console=ttyS0", "quiet", "panic=-1", "hosts.job=" + v.job}
	for _, k := range slices.Sorted(maps.Keys(v.params)) {
		cmdline = append(cmdline, "hosts."+k+"="+v.params[k])
	}
	mem := fmt.Sprint(guestMemory)
	args := []string{g.qemu,
		"-accel", "tcg", "-M", "q35", "-m", mem, "-smp", "1",
		"-object", "memory-backend-memfd,id=mem,size=" + mem + "M,share=on", "-numa", "node,memdev=mem",
		"-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", g.kernel, "-initrd", g.initrd, "-append", strings.Join(cmdline, " "),
	}
	return append(args, v.devices...)
}

// said returns what the guest reported, in the log of p (QEMU or the
// one-socketctl running it): the lines that begin "HOSTS ", less that.
// It fails t if the guest reported an error or did not finish.
func said(t *testing.T, p *testutil.Proc) []string {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(p.Log.String()))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if rest, ok := strings.CutPrefix(line, "HOSTS "); ok {
			lines = append(lines, rest)
		}
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "error") {
			t.Fatalf("the guest reported %q; the log of %s:\n%s", l, p.Name, p.Log.String())
		}
	}
	if len(lines) == 0 || lines[len(lines)-1] != "done" {
		t.Fatalf("the guest did not finish its job; the log of %s:\n%s", p.Name, p.Log.String())
	}
	return lines[:len(lines)-1]
}

// TestGuest boots the guest with no device, the harness's own check: the
// kernel, the initramfs and its init, the console and the power-off.
func TestGuest(t *testing.T) {
	g := needGuest(t)
	p := start(t, g.argv(vm{job: "hello"})...)
	requireExit(t, p, 0)
	lines := said(t, p)
	version := strings.TrimPrefix(filepath.Base(g.kernel), "vmlinuz-")
	if len(lines) != 1 || lines[0] != "hello "+version {
		t.Fatalf("the guest said %q, want [\"hello %s\"]", lines, version)
	}
}
