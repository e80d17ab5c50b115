package validate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/one-socket/one-socket/internal/testutil"
)

// The node test does on this machine what the kubelet and a container
// runtime do with the manifests on one node, as far as the broker can
// tell: each container runs with its pod's uid, gid, supplementary
// groups, capabilities and no_new_privs (setpriv), in a mount namespace
// of its own (unshare) where its volumes are bind mounts, read-only where
// the manifest says so, and the root file system is read-only when
// readOnlyRootFilesystem says so. The node's file system is a temporary
// directory: the hostPath /run/one-socket is NODE/run/one-socket, and
// paths in arguments, environment and probes are translated through the
// container's volume mounts. The binaries are built from this checkout.

// needNode skips the test, or fails it under ONE_SOCKET_REQUIRE_ALL=1,
// when this machine cannot play a node.
func needNode(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "it must run as root, to start processes as other users and make mounts"
	}
	for _, tool := range []string{"unshare", "setpriv", "mount", "sh", "install"} {
		if _, err := exec.LookPath(tool); err != nil && why == "" {
			why = tool + " is not installed (Debian: util-linux, mount, coreutils)"
		}
	}
	if why == "" {
		if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
			why = fmt.Sprintf("cannot make a mount namespace here: %v: %s", err, out)
		}
	}
	if why != "" {
		cannotCheck(t, why)
	}
}

type node struct {
	t    *testing.T
	root string // the node's "/"
	bin  string
	d    *Deployment
}

// path returns where an absolute node path lives in the test.
func (n *node) path(p string) string { return filepath.Join(n.root, p) }

type pod struct {
	n    *node
	spec *Pod
	vols map[string]string // volume name -> directory in the test
}

// container is a container of a pod, with the credentials it runs with
// (which a test may change, to play an intruder).
type container struct {
	pod    *pod
	c      *corev1.Container
	uid    int64
	gid    int64
	groups []int64
}

func newNode(t *testing.T, d *Deployment) *node {
	root, err := os.MkdirTemp("", "one-socket-node-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	// Processes under other uids must reach the volumes below.
	require.NoError(t, os.Chmod(root, 0o755))
	return &node{t: t, root: root, bin: binaries(t), d: d}
}

// startPod sets up a pod's volumes, runs its init containers to the end
// and starts its containers.
func (n *node) startPod(p *Pod) (*pod, map[string]*testutil.Proc) {
	t := n.t
	pd := &pod{n: n, spec: p, vols: map[string]string{}}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.HostPath != nil:
			dir := n.path(v.HostPath.Path)
			fi, err := os.Stat(dir)
			switch {
			case err == nil && !fi.IsDir():
				t.Fatalf("%s: hostPath %s is not a directory", p, v.HostPath.Path)
			case errors.Is(err, os.ErrNotExist) && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate:
				// As the kubelet makes it.
				require.NoError(t, os.MkdirAll(dir, 0o755))
			case err != nil:
				t.Fatalf("%s: hostPath %s: %v (the kubelet would not start the pod)", p, v.HostPath.Path, err)
			}
			pd.vols[v.Name] = dir
		case v.ConfigMap != nil:
			pd.vols[v.Name] = n.configMapVolume(p, v)
		case v.EmptyDir != nil:
			// As the kubelet makes it: empty, and everyone may write. At a
			// short path, unlike the kubelet's: the container sees it at
			// its mount path, but here its programs see this one, and a
			// socket made in it must fit in sun_path.
			dir := n.path(filepath.Join("ed", p.Name, v.Name))
			require.NoError(t, os.MkdirAll(dir, 0o755))
			require.NoError(t, os.Chmod(dir, 0o777))
			pd.vols[v.Name] = dir
		default:
			t.Fatalf("%s: the node test knows no volume like %q", p, v.Name)
		}
	}
	for i := range p.Spec.InitContainers {
		c := pd.container(p.Spec.InitContainers[i].Name)
		code, out := c.run(c.argv()...)
		require.Equal(t, 0, code, "%s: init container %s: %s", p, c.c.Name, out)
	}
	procs := map[string]*testutil.Proc{}
	for i := range p.Spec.Containers {
		c := pd.container(p.Spec.Containers[i].Name)
		procs[c.c.Name] = c.start(c.argv()...)
	}
	return pd, procs
}

// configMapVolume writes a ConfigMap's files the way the kubelet does: in
// a timestamped directory that ..data points to, with a link for each
// file, so that an update replaces them all at once.
func (n *node) configMapVolume(p *Pod, v corev1.Volume) string {
	t := n.t
	o, ok := find(n.d.Objects, "ConfigMap", p.Namespace, v.ConfigMap.Name)
	require.True(t, ok)
	data := o.Obj.(*corev1.ConfigMap).Data
	dir := n.path(filepath.Join("var/lib/kubelet/pods", p.Name, "volumes/kubernetes.io~configmap", v.Name))
	ts := "..2026_01_01_00_00_00.000000001"
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ts), 0o755))
	mode := os.FileMode(0o644)
	if v.ConfigMap.DefaultMode != nil {
		mode = os.FileMode(*v.ConfigMap.DefaultMode)
	}
	files := map[string]string{}
	for k := range data {
		files[k] = k
	}
	if len(v.ConfigMap.Items) > 0 {
		files = map[string]string{}
		for _, it := range v.ConfigMap.Items {
			files[it.Path] = it.Key
		}
	}
	for name, key := range files {
		f := filepath.Join(dir, ts, name)
		require.NoError(t, os.WriteFile(f, []byte(data[key]), 0o600))
		require.NoError(t, os.Chmod(f, mode))
		require.NoError(t, os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)))
	}
	require.NoError(t, os.Symlink(ts, filepath.Join(dir, "..data")))
	return dir
}

func (pd *pod) container(name string) *container {
	t := pd.n.t
	for _, c := range containers(pd.spec.Spec) {
		if c.Name != name {
			continue
		}
		uid, gid, err := UIDGID(pd.spec.Spec, c)
		require.NoError(t, err)
		return &container{pod: pd, c: c, uid: uid, gid: gid, groups: Groups(pd.spec.Spec)}
	}
	t.Fatalf("%s has no container %s", pd.spec, name)
	return nil
}

// as returns the container run by someone else.
func (c *container) as(uid, gid int64, groups ...int64) *container {
	o := *c
	o.uid, o.gid, o.groups = uid, gid, groups
	return &o
}

func (c *container) argv() []string { return append(slices.Clone(c.c.Command), c.c.Args...) }

// translate maps a path inside the container to the test's directory
// behind its volume mount. A flag's value (--name=PATH) and the values of
// a QEMU option list (driver=file,filename=PATH) are translated too;
// anything else is left as it is.
func (c *container) translate(s string) string {
	if name, value, ok := strings.Cut(s, "="); ok && strings.HasPrefix(name, "-") {
		return name + "=" + c.translate(value)
	}
	if !strings.HasPrefix(s, "/") && strings.Contains(s, "=") && !strings.ContainsAny(s, " \t\n") {
		els := strings.Split(s, ",")
		for i, el := range els {
			if k, v, ok := strings.Cut(el, "="); ok {
				els[i] = k + "=" + c.translate(v)
			}
		}
		return strings.Join(els, ",")
	}
	for _, m := range c.c.VolumeMounts {
		if s == m.MountPath || strings.HasPrefix(s, m.MountPath+"/") {
			return c.pod.vols[m.Name] + s[len(m.MountPath):]
		}
	}
	return s
}

// mountScript runs in the container's new mount namespace: it makes each
// volume a bind mount of its own (read-only where asked), then the root
// read-only if asked, and executes the rest of its arguments.
const mountScript = `n=$1 root=$2
shift 2
while [ "$n" -gt 0 ]; do
	mount --bind "$2" "$2" || exit 125
	if [ "$1" = ro ]; then mount -o remount,bind,ro "$2" "$2" || exit 125; fi
	shift 2
	n=$((n - 1))
done
if [ "$root" = ro ]; then mount -o remount,bind,ro / || exit 125; fi
exec "$@"`

// command returns argv as the container would run it.
func (c *container) command(argv ...string) *exec.Cmd {
	sc := c.c.SecurityContext
	rootRO := "rw"
	if sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		rootRO = "ro"
	}
	args := []string{"--mount", "--propagation", "private", "--", "sh", "-c", mountScript, "sh",
		strconv.Itoa(len(c.c.VolumeMounts)), rootRO}
	for _, m := range c.c.VolumeMounts {
		ro := "rw"
		if m.ReadOnly {
			ro = "ro"
		}
		args = append(args, ro, c.pod.vols[m.Name])
	}

	args = append(args, "setpriv", fmt.Sprintf("--reuid=%d", c.uid), fmt.Sprintf("--regid=%d", c.gid))
	if len(c.groups) == 0 {
		args = append(args, "--clear-groups")
	} else {
		var gs []string
		for _, g := range c.groups {
			gs = append(gs, strconv.FormatInt(g, 10))
		}
		args = append(args, "--groups="+strings.Join(gs, ","))
	}
	caps := "-all"
	if sc != nil && sc.Capabilities != nil {
		for _, a := range sc.Capabilities.Add {
			caps += ",+" + strings.ToLower(string(a))
		}
	}
	args = append(args, "--inh-caps=-all", "--bounding-set="+caps)
	if sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--no-new-privs")
	}
	args = append(args, "--")
	for _, a := range argv {
		args = append(args, c.translate(a))
	}

	cmd := exec.Command("unshare", args...)
	// The environment the kubelet gives: the image's PATH (with the
	// binaries built here in front), the pod's name, the container's env.
	cmd.Env = []string{"PATH=" + c.pod.n.bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + c.pod.spec.Name}
	for _, e := range c.c.Env {
		require.Nil(c.pod.n.t, e.ValueFrom, "the node test knows only env values")
		cmd.Env = append(cmd.Env, e.Name+"="+c.translate(e.Value))
	}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// run runs argv in the container to its end and returns its exit status
// and output.
func (c *container) run(argv ...string) (int, string) {
	cmd := c.command(argv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		require.ErrorAs(c.pod.n.t, err, &ee, "%q", argv)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// start starts argv in the container; the test's end kills what is left
// of it.
func (c *container) start(argv ...string) *testutil.Proc {
	return testutil.StartProc(c.pod.n.t, c.pod.spec.Name+"/"+c.c.Name, c.command(argv...))
}

// probe runs an exec probe in the container.
func (c *container) probe(pr *corev1.Probe) (int, string) { return c.run(pr.Exec.Command...) }

func (c *container) status(ctl string) map[string]any {
	t := c.pod.n.t
	code, out := c.run("one-socketctl", "--ctl-socket="+ctl, "--json", "status")
	require.Equal(t, 0, code, out)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	return st
}

func requireOwner(t *testing.T, path string, uid, gid int64, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	assert.Equal(t, [2]int64{uid, gid}, [2]int64{int64(st.Uid), int64(st.Gid)}, "owner and group of %s", path)
	assert.Equal(t, mode, fi.Mode(), "mode of %s", path)
}

func sameDevice(t *testing.T, a, b string) bool {
	var sa, sb syscall.Stat_t
	require.NoError(t, syscall.Stat(a, &sa))
	require.NoError(t, syscall.Stat(b, &sb))
	return sa.Dev == sb.Dev
}

// startBroker starts the broker's pod and waits until its readiness probe
// passes.
func (n *node) startBroker() (*container, *testutil.Proc) {
	t, b := n.t, n.d.Broker
	brokerPod, procs := n.startPod(b.Pod)
	daemonProc := procs[b.Container.Name]
	daemon := brokerPod.container(b.Container.Name)
	ready := func() bool { code, _ := daemon.probe(b.Container.ReadinessProbe); return code == 0 }
	daemonProc.WaitFor(t, "the readiness probe to pass", ready)
	assert.Contains(t, daemonProc.Log.String(), `msg="one-socket started"`)
	var rules int
	for _, l := range strings.Split(b.PolicyText, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "allow" {
			rules++
		}
	}
	assert.Contains(t, daemonProc.Log.String(), fmt.Sprintf("%s: %d rules (%d allow, 0 deny), default deny\"", daemon.translate(b.PolicyFile), rules, rules))
	return daemon, daemonProc
}

// TestNode starts the broker's pod and the example's pods as a node would
// and checks that the example pairs through the broker, that the socket's
// permissions and the policy keep others out, and that the probes work.
func TestNode(t *testing.T) {
	needNode(t)
	d, errs := checkFiles(t, readManifests(t))
	require.Empty(t, errs)
	b := d.Broker
	n := newNode(t, d)
	daemon, daemonProc := n.startBroker()

	// What the init container and the daemon made on the node.
	requireOwner(t, n.path(b.Dir), b.DirOwner, b.DirGroup, os.ModeDir|b.DirMode)
	sockMode, err := strconv.ParseUint(b.Flags["socket-mode"], 8, 32)
	require.NoError(t, err)
	requireOwner(t, n.path(b.Socket), b.UID, b.SocketGroup, os.ModeSocket|os.FileMode(sockMode))
	requireOwner(t, n.path(b.CtlSocket), b.UID, b.GID, os.ModeSocket|0o600)

	// The example: both pods log what crossed the pair.
	started := map[*Pod]map[string]*testutil.Proc{}
	pods := map[string]*pod{}
	for _, cl := range d.Clients() {
		if _, ok := started[cl.Pod]; !ok && cl.Pod.Owner.File == "example.yaml" {
			pods[cl.Pod.Name], started[cl.Pod] = n.startPod(cl.Pod)
		}
	}
	var server, client *testutil.Proc
	for p, procs := range started {
		switch p.Name {
		case "echo-server":
			server = procs["echo-server"]
		case "echo-client":
			client = procs["echo-client"]
		}
	}
	require.NotNil(t, server)
	require.NotNil(t, client)
	// The client pod runs the example's Go client, built here and found
	// on PATH as in the image; it sends its first line as soon as it is
	// paired.
	require.Equal(t, []string{EchoClient}, pods["echo-client"].spec.Spec.Containers[0].Command)
	client.WaitFor(t, "the client's first answer", func() bool {
		return strings.Contains(client.Log.String(), "paired with a server for \"example-echo\"\n"+
			"sent \"hello 1\", got \"you said: hello 1\"\n")
	})
	server.WaitFor(t, "the server's first line", func() bool {
		return strings.Contains(server.Log.String(), "echo-server: got: hello 1\n")
	})

	// The server pod goes and comes back (the kubelet restarts it): the
	// client says why its pair failed, asks again, and talks to the new
	// server.
	server.Kill()
	client.WaitFor(t, "the client to notice", func() bool {
		return strings.Contains(client.Log.String(), "; asking for a new pair in 1s\n")
	})
	_, restarted := n.startPod(pods["echo-server"].spec)
	server = restarted["echo-server"]
	answered := regexp.MustCompile(`paired with a server for "example-echo"\nsent "hello (\d+)", got "you said: hello (\d+)"\n`)
	client.WaitFor(t, "an answer from the new server", func() bool {
		return len(answered.FindAllString(client.Log.String(), -1)) == 2
	})
	m := answered.FindAllStringSubmatch(client.Log.String(), -1)[1]
	assert.Equal(t, m[1], m[2])
	server.WaitFor(t, "the new server's log of the line", func() bool {
		return strings.Contains(server.Log.String(), "echo-server: got: hello "+m[1]+"\n")
	})

	// What the guide does with kubectl exec: one-socketctl pair in the
	// client pod is answered by the server's second loop while the
	// client program keeps its pair.
	clientC := pods["echo-client"].container("echo-client")
	demo := clientC.command("one-socketctl", "--timeout=10s", "pair", "--mode", "client", "example-echo")
	demo.Stdin = strings.NewReader("hi there\n")
	said, err := demo.CombinedOutput()
	require.NoError(t, err, "%s", said)
	assert.Equal(t, "you said: hi there\n", string(said))

	// Who else gets in. The client pod's container, run by others, each
	// asking once (pair would otherwise ask again until its timeout, and
	// each refusal counts):
	pair := func(c *container, mode string) (int, string) {
		return c.run("one-socketctl", "--timeout=10s", "pair", "--no-retry", "--mode", mode, "example-echo")
	}
	// without the socket's group it cannot even enter the directory;
	code, out := pair(clientC.as(2002, 2002), "client")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "no permission to connect to "+daemon.translate(b.Socket))
	// with it, but as a uid the policy does not name, it is refused, and
	// the echo server's second loop, waiting in the broker, is not handed
	// to it;
	code, out = pair(clientC.as(2003, 2003, b.SocketGroup), "client")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "closed the connection without a pair")
	// the client's own uid may not take the server's side;
	code, out = pair(clientC, "server")
	assert.Equal(t, 1, code, out)
	// nor use the control socket;
	code, out = clientC.run("one-socketctl", "--ctl-socket="+b.CtlSocket, "status")
	assert.Equal(t, 1, code, out)
	assert.Contains(t, out, "no permission to connect to "+daemon.translate(b.CtlSocket))
	// and on its read-only mount even the directory's owner could not
	// remove or replace the socket.
	code, out = clientC.as(b.DirOwner, b.DirGroup).run("sh", "-c", `rm -f "$ONE_SOCKET_PATH"`)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, out, "Read-only file system")

	// The root file system is read-only in every container here. The
	// node's directory stands in for a file of the image when it is on
	// the same file system as /.
	if sameDevice(t, n.root, "/") {
		for _, c := range []*container{daemon, clientC} {
			code, out = c.as(0, 0).run("sh", "-c", "echo > "+n.path("written-by-a-container"))
			assert.NotEqual(t, 0, code, "%s wrote to the root file system", c.c.Name)
			assert.Contains(t, out, "Read-only file system")
		}
	}

	st := daemon.status(b.CtlSocket)
	assert.EqualValues(t, 2, st["denied_total"])
	assert.GreaterOrEqual(t, st["paired_total"], float64(1))
	assert.Contains(t, daemonProc.Log.String(), `msg="request denied" pid=`)
	assert.Contains(t, daemonProc.Log.String(), " uid=2003 gid=2003 mode=client key=example-echo")
	code, out = daemon.probe(b.Container.LivenessProbe)
	assert.Equal(t, 0, code, "liveness probe: %s", out)

	// The kubelet deletes the pods: the server's sh ignores SIGTERM as
	// process 1 and is killed; the client stops on SIGTERM, with status
	// 0; the broker too, and it removes its sockets.
	server.Kill()
	require.NoError(t, client.Cmd.Process.Signal(syscall.SIGTERM))
	<-client.Done()
	assert.NoError(t, client.Err, "the client's exit: %s", client.Log.String())
	assert.True(t, strings.HasSuffix(client.Log.String(), "stopping: terminated signal received\n"), "%s", client.Log.String())
	require.NoError(t, daemonProc.Cmd.Process.Signal(syscall.SIGTERM))
	<-daemonProc.Done()
	assert.NoError(t, daemonProc.Err, "the broker's exit: %s", daemonProc.Log.String())
	assert.Contains(t, daemonProc.Log.String(), `msg="one-socket stopped" reason=terminated`)
	for _, s := range []string{b.Socket, b.CtlSocket} {
		_, err := os.Lstat(n.path(s))
		assert.ErrorIs(t, err, os.ErrNotExist, "%s after the stop", s)
	}
	_, err = os.Stat(n.path(b.Dir))
	assert.NoError(t, err, "the directory stays for the next broker")
}
