package validate

import (
	"fmt"
	"path"
	"strings"
)

// What the programs run by "one-socketctl pair ... -- CMD" do with
// descriptor 3, as measured with Debian 12's QEMU 7.2: a socket chardev
// of qemu-system-* with fd=3 uses it as a connected socket, unless it has
// server=on, when QEMU calls listen() on it, as qemu-storage-daemon does
// with an export's addr.type=fd. listen() fails with EINVAL on a brokered
// socket, which is connected, so such a program needs --listening-fd, and
// the others must not have it. Programs not named here are not checked.

// fd3 is the descriptor one-socketctl gives its command, as a number in
// QEMU's options.
const fd3 = "3"

// qemuOpts splits a QEMU option list, "first,key=value,...": the first
// element may be a bare value (the driver, backend or type); a later bare
// key is a boolean set to on. QEMU's ",," (a literal comma) does not
// occur in the manifests and is not handled.
func qemuOpts(s string) (first string, opts map[string]string) {
	opts = map[string]string{}
	for i, el := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(el, "=")
		switch {
		case ok:
			opts[k] = v
		case i == 0:
			first = el
		default:
			opts[k] = "on"
		}
	}
	return first, opts
}

// qemuArgs returns the values of one option of a QEMU command line, given
// as -name VALUE, --name VALUE or --name=VALUE.
func qemuArgs(argv []string, name string) []string {
	var vals []string
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "-"+name || a == "--"+name:
			if i+1 < len(argv) {
				vals = append(vals, argv[i+1])
				i++
			}
		case strings.HasPrefix(a, "--"+name+"="):
			vals = append(vals, strings.TrimPrefix(a, "--"+name+"="))
		}
	}
	return vals
}

func isOn(v string) bool { return v == "on" || v == "yes" || v == "true" }

// fd3Problems says what is wrong with how the command argv would use the
// descriptor 3 that one-socketctl pair gives it, a listening socket if
// listening (--listening-fd), else the connected pair.
func fd3Problems(argv []string, listening bool) []string {
	prog := path.Base(argv[0])
	var problems []string
	var uses, listens bool
	switch {
	case prog == "qemu-storage-daemon":
		for _, v := range qemuArgs(argv, "export") {
			if _, o := qemuOpts(v); o["addr.type"] == "fd" && o["addr.str"] == fd3 {
				uses, listens = true, true
			}
		}
	case strings.HasPrefix(prog, "qemu-system-"):
		var fdChardev string
		for _, v := range qemuArgs(argv, "chardev") {
			if backend, o := qemuOpts(v); backend == "socket" && o["fd"] == fd3 {
				uses, fdChardev = true, o["id"]
				listens = listens || isOn(o["server"])
			}
		}
		problems = append(problems, vhostUserProblems(prog, argv, fdChardev)...)
	default:
		return nil
	}
	switch {
	case !uses:
		problems = append(problems, fmt.Sprintf("%s does not use descriptor 3, which one-socketctl gives it", prog))
	case listens && !listening:
		problems = append(problems, fmt.Sprintf("%s calls listen() on descriptor 3, which fails on the brokered socket (it is connected): give %s pair --listening-fd", prog, Ctl))
	case !listens && listening:
		problems = append(problems, fmt.Sprintf("%s takes descriptor 3 as a connected socket, but --listening-fd makes it a listening one", prog))
	}
	return problems
}

// vhostUserProblems checks a QEMU with vhost-user devices: the back-end
// reaches the guest's memory only through a memfd or file it receives,
// so the memory must be a shared backend, and some device should be on
// the chardev of descriptor 3 (fdChardev), or the pair goes unused.
func vhostUserProblems(prog string, argv []string, fdChardev string) []string {
	var problems []string
	var devices, onPair int
	for _, v := range qemuArgs(argv, "device") {
		driver, o := qemuOpts(v)
		if !strings.HasPrefix(driver, "vhost-user-") {
			continue
		}
		devices++
		if fdChardev != "" && o["chardev"] == fdChardev {
			onPair++
		}
	}
	if devices == 0 {
		return nil
	}
	if fdChardev != "" && onPair == 0 {
		problems = append(problems, fmt.Sprintf("%s: no vhost-user device has chardev=%s, the socket on descriptor 3", prog, fdChardev))
	}
	shared := map[string]bool{}
	for _, v := range qemuArgs(argv, "object") {
		if typ, o := qemuOpts(v); strings.HasPrefix(typ, "memory-backend-") && isOn(o["share"]) {
			shared[o["id"]] = true
		}
	}
	var used bool
	for _, v := range qemuArgs(argv, "machine") {
		_, o := qemuOpts(v)
		used = used || shared[o["memory-backend"]]
	}
	for _, v := range qemuArgs(argv, "numa") {
		_, o := qemuOpts(v)
		used = used || shared[o["memdev"]]
	}
	if !used {
		problems = append(problems, fmt.Sprintf("%s: a vhost-user back-end needs the guest's memory shared: give -object memory-backend-memfd,id=ID,share=on,size=... and -machine memory-backend=ID", prog))
	}
	return problems
}
