package validate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestManifests decodes every document of every manifest strictly and
// runs every cross-check on them.
func TestManifests(t *testing.T) {
	files := readManifests(t)
	require.Contains(t, files, "one-socket.yaml")
	require.Contains(t, files, "example.yaml")
	require.Contains(t, files, "vhost-user-blk.yaml")
	require.Contains(t, files, "podmonitor.yaml")
	objs, err := ParseAll(files)
	require.NoError(t, err)

	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.Kind()]++
	}
	assert.Equal(t, map[string]int{"Namespace": 3, "ServiceAccount": 1, "ConfigMap": 1, "DaemonSet": 1, "Pod": 4, "PodMonitor": 1}, kinds)

	d, errs := Check(objs, want(t))
	for _, err := range errs {
		t.Error(err)
	}
	b := d.Broker
	require.NotNil(t, b)
	require.NotNil(t, b.Policy)
	require.NotNil(t, b.Init)
	// The examples: a server and a client on each key, and the
	// vhost-user-blk pair hands its connection over.
	modes := map[string]string{}
	for _, c := range d.Clients() {
		modes[c.Pod.Name] = fmt.Sprintf("%s %s handoff=%v", c.Key, c.Mode, c.Handoff)
	}
	assert.Equal(t, map[string]string{
		"echo-server":            "example-echo server handoff=false",
		"echo-client":            "example-echo client handoff=false",
		"vhost-user-blk-storage": "vhost-user-blk-disk0 server handoff=true",
		"vhost-user-blk-vm":      "vhost-user-blk-disk0 client handoff=true",
	}, modes)

	// The guide must name what the manifests use.
	guide, err := os.ReadFile(filepath.Join(repoRoot(t), "doc", "kubernetes.md"))
	require.NoError(t, err)
	mention := []string{b.Socket, b.CtlSocket, b.PolicyFile,
		"--socket-group=" + b.Flags["socket-group"], "--max-waiting-per-uid=" + b.Flags["max-waiting-per-uid"],
		"--max-conns=" + b.Flags["max-conns"], "--max-wait=" + b.Flags["max-wait"],
		"cd deploy/kubernetes/validate && go test ./..."}
	for _, cf := range readContainerfiles(t) {
		mention = append(mention, "podman build -f "+cf.rel+" -t "+cf.image+" .")
	}
	for name := range files {
		mention = append(mention, "kubectl apply -f deploy/kubernetes/"+name)
	}
	for _, c := range d.Clients() {
		mention = append(mention, c.Key, c.Pod.Name)
	}
	// The policy, rule by rule.
	for _, l := range strings.Split(b.PolicyText, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			mention = append(mention, l)
		}
	}
	for _, s := range mention {
		assert.True(t, strings.Contains(string(guide), s), "doc/kubernetes.md does not mention %q", s)
	}
}

// document returns the document of the given kind from a manifest's text,
// and the text around it.
func document(t *testing.T, text, kind string) string {
	t.Helper()
	var found []string
	for _, doc := range strings.Split(text, "\n---\n") {
		if strings.Contains(doc, "\nkind: "+kind+"\n") {
			found = append(found, doc)
		}
	}
	require.Len(t, found, 1, "want one %s document", kind)
	return found[0]
}

// TestStrictDecoding feeds altered copies of the DaemonSet to the decoder:
// each alteration must be refused, and for the right reason.
func TestStrictDecoding(t *testing.T) {
	ds := document(t, string(readManifests(t)["one-socket.yaml"]), "DaemonSet")
	obj, err := Decode([]byte(ds))
	require.NoError(t, err, "the unaltered DaemonSet must decode")
	require.IsType(t, &appsv1.DaemonSet{}, obj)

	type kind int
	const (
		strictErr kind = iota // a field the type does not have, or one given twice
		otherErr              // a value of the wrong type, a malformed value
		unknownKind
	)
	cases := []struct {
		name, old, new string
		kind           kind
		msg            string
	}{
		{"misspelt field", "readOnlyRootFilesystem: true\n            privileged: false\n            capabilities:\n              drop: [\"ALL\"]\n          # Each",
			"readOnlyRootFileSystem: true\n            privileged: false\n            capabilities:\n              drop: [\"ALL\"]\n          # Each", strictErr, `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem"`},
		{"field at the wrong level", "  updateStrategy:\n", "  updateStrategey:\n", strictErr, `unknown field "spec.updateStrategey"`},
		{"field given twice", "      enableServiceLinks: false\n", "      enableServiceLinks: false\n      enableServiceLinks: true\n", strictErr, `"enableServiceLinks" already set`},
		{"string for an integer", "runAsUser: 10001", `runAsUser: "10001"`, otherErr, "cannot unmarshal string"},
		{"unquoted octal in a list of strings", `"-m", "0750"`, `"-m", 0750`, otherErr, "cannot unmarshal number"},
		{"scalar for a list", "supplementalGroups: [3000]", "supplementalGroups: 3000", otherErr, "cannot unmarshal number"},
		{"malformed quantity", "memory: 128Mi", "memory: 128MiB", otherErr, "quantities must match"},
		{"unknown kind", "kind: DaemonSet\n", "kind: DaemonSett\n", unknownKind, `no kind "DaemonSett" is registered`},
		{"unknown version", "apiVersion: apps/v1\n", "apiVersion: apps/v2\n", unknownKind, `no kind "DaemonSet" is registered for version "apps/v2"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode([]byte(replaceOnce(t, ds, c.old, c.new)))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.msg)
			assert.Equal(t, c.kind == strictErr, runtime.IsStrictDecodingError(err), "strict decoding error: %v", err)
			assert.Equal(t, c.kind == unknownKind, runtime.IsNotRegisteredError(err), "kind not registered: %v", err)
		})
	}

	_, err = Decode([]byte(replaceOnce(t, ds, "kind: DaemonSet\n", "")))
	assert.True(t, runtime.IsMissingKind(err), "no kind: %v", err)
}

// TestParseNamesThePlace checks that a mistake in a file with several
// documents is reported with the file and the document's number, and
// that other files are still read.
func TestParseNamesThePlace(t *testing.T) {
	files := readManifests(t)
	files["one-socket.yaml"] = []byte(replaceOnce(t, string(files["one-socket.yaml"]), "  maxUnavailable: 1\n", "  maxUnavailabel: 1\n"))
	files["example.yaml"] = []byte(replaceOnce(t, string(files["example.yaml"]), "  name: echo-client\n", "  nam: echo-client\n"))
	_, err := ParseAll(files)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `one-socket.yaml#5: strict decoding error: unknown field "spec.updateStrategy.rollingUpdate.maxUnavailabel"`)
	assert.Contains(t, err.Error(), `example.yaml#4: strict decoding error: unknown field "metadata.nam"`)

	_, err = Parse("empty.yaml", []byte("# nothing here\n---\n# nor here\n"))
	assert.ErrorContains(t, err, "no Kubernetes object")
	_, err = Parse("bad.yaml", []byte("kind: Pod\napiVersion: v1\nmetadata: {name: x\n"))
	assert.ErrorContains(t, err, "bad.yaml#1")
}

// TestCrossChecks alters one thing at a time that must agree between
// manifests, and expects the checks to say so.
func TestCrossChecks(t *testing.T) {
	cases := []struct {
		name, file, old, new string
		msgs                 []string
	}{
		{"metrics port not declared", "one-socket.yaml", "containerPort: 9731", "containerPort: 9732",
			[]string{"--metrics-listen=:9731: the broker container declares no port 9731", `endpoint port "metrics" is not the broker's metrics port ""`}},
		{"metrics annotation off", "one-socket.yaml", `prometheus.io/scrape: "true"`, `prometheus.io/scrape: "false"`,
			[]string{`annotation prometheus.io/scrape is "false"; the broker's metrics want "true"`}},
		{"PodMonitor on another port", "podmonitor.yaml", "    - port: metrics", "    - port: http",
			[]string{`endpoint port "http" is not the broker's metrics port "metrics"`}},
		{"PodMonitor selecting nothing", "podmonitor.yaml", "      app.kubernetes.io/component: broker\n  podMetricsEndpoints",
			"      app.kubernetes.io/component: brokers\n  podMetricsEndpoints", []string{"does not select the broker's pods"}},
		{"volume mount without volume", "one-socket.yaml",
			"            - name: policy\n              mountPath: /etc/one-socket\n",
			"            - name: polcy\n              mountPath: /etc/one-socket\n",
			[]string{`container one-socket mounts volume "polcy", which the pod does not declare`, `volume "policy" is mounted by no container`}},
		{"selector that misses the template", "one-socket.yaml",
			"    matchLabels:\n      app.kubernetes.io/name: one-socket\n      app.kubernetes.io/component: broker\n",
			"    matchLabels:\n      app.kubernetes.io/name: one-socket\n      app.kubernetes.io/component: brokers\n",
			[]string{"does not match the template's labels"}},
		{"missing ConfigMap", "one-socket.yaml", "name: one-socket-policy\n            defaultMode",
			"name: one-socket-policies\n            defaultMode",
			[]string{`no ConfigMap "one-socket-policies" in namespace "one-socket"`}},
		{"policy file that is not in the ConfigMap", "one-socket.yaml", "--policy=/etc/one-socket/policy.conf",
			"--policy=/etc/one-socket/policy.txt", []string{`ConfigMap one-socket/one-socket-policy: no key "policy.txt", which the broker reads as --policy=/etc/one-socket/policy.txt`}},
		{"policy with a mistake", "one-socket.yaml", "key=prefix:example- mode=server", "key=prefix:example- mode=srv",
			[]string{`the policy does not load: /etc/one-socket/policy.conf:10: unknown mode "srv"`}},
		{"another hostPath for a client", "example.yaml",
			"        path: /run/one-socket\n        type: Directory\n---",
			"        path: /run/one-sockets\n        type: Directory\n---",
			[]string{"hostPath /run/one-sockets: the broker's directory is /run/one-socket", "mounts hostPath /run/one-sockets at /run/one-socket"}},
		{"client socket path", "example.yaml",
			"          value: /run/one-socket/one.socket\n        - name: PAIR_KEY\n          value: example-echo\n      securityContext:",
			"          value: /run/one-socket/broker.socket\n        - name: PAIR_KEY\n          value: example-echo\n      securityContext:",
			[]string{"ONE_SOCKET_PATH is \"/run/one-socket/broker.socket\", but the broker listens on /run/one-socket/one.socket"}},
		{"client key the policy refuses", "example.yaml",
			"value: example-echo\n      securityContext:", "value: demo-echo\n      securityContext:",
			[]string{`container echo-client (uid 2002, gid 2002) may not ask for "demo-echo" as client`,
				`container echo-server asks for "example-echo" as server, but no pod`}},
		{"client key by flag, over PAIR_KEY", "example.yaml",
			`args: ["--interval=5s"]`, `args: ["--interval=5s", "--key=demo-echo"]`,
			[]string{`container echo-client (uid 2002, gid 2002) may not ask for "demo-echo" as client`}},
		{"client without a key", "example.yaml",
			"        - name: PAIR_KEY\n          value: example-echo\n      securityContext:", "      securityContext:",
			[]string{"container echo-client: one-socket-echo-client has no key: give --key or PAIR_KEY",
				`container echo-server asks for "example-echo" as server, but no pod`}},
		{"client told another mode", "example.yaml",
			"          value: example-echo\n      securityContext:",
			"          value: example-echo\n        - name: PAIR_MODE\n          value: server\n      securityContext:",
			[]string{`container echo-client: PAIR_MODE is "server", but one-socket-echo-client always asks as client`}},
		{"client flag it does not have", "example.yaml", `args: ["--interval=5s"]`, `args: ["--intervall=5s"]`,
			[]string{"container echo-client: one-socket-echo-client has no flag --intervall"}},
		{"client interval without a unit", "example.yaml", `args: ["--interval=5s"]`, `args: ["--interval=5"]`,
			[]string{"container echo-client: one-socket-echo-client --interval=5: give a positive duration"}},
		{"client argument", "example.yaml", `args: ["--interval=5s"]`, `args: ["--interval=5s", "example-echo"]`,
			[]string{`container echo-client: one-socket-echo-client takes flags only, written --name=value; got ["example-echo"]`}},
		{"server script with a fixed mode", "example.yaml", `pair --mode "$PAIR_MODE"`, `pair --mode server`,
			[]string{"container echo-server: the script does not use $PAIR_MODE"}},
		{"client uid the policy refuses", "example.yaml",
			"    runAsUser: 2002\n", "    runAsUser: 2003\n",
			[]string{`container echo-client (uid 2003, gid 2002) may not ask for "example-echo" as client`}},
		{"client outside the socket group", "example.yaml",
			"    runAsUser: 2002\n    runAsGroup: 2002\n    runAsNonRoot: true\n    supplementalGroups: [3000]\n",
			"    runAsUser: 2002\n    runAsGroup: 2002\n    runAsNonRoot: true\n    supplementalGroups: [3001]\n",
			[]string{"container echo-client is not in group 3000"}},
		{"client as the broker's uid", "example.yaml", "    runAsUser: 2002\n", "    runAsUser: 10001\n",
			[]string{"runs as the broker's uid 10001 and could use its control socket"}},
		{"policy that lets a client serve", "one-socket.yaml",
			"    allow uid=2002 gid=2002 key=prefix:example- mode=client\n",
			"    allow uid=2002 gid=2002 key=prefix:example- mode=client,server\n",
			[]string{`container echo-client (uid 2002) may also take the other side of "example-echo" (server)`}},
		{"client on another node", "example.yaml", "topologyKey: kubernetes.io/hostname", "topologyKey: topology.kubernetes.io/zone",
			[]string{`container echo-client asks for "example-echo" as client, but no pod that is bound to its node`}},
		{"socket group the clients lack", "one-socket.yaml", "--socket-group=3000", "--socket-group=3001",
			[]string{"the broker is not in group 3001", "gives /run/one-socket to group 3000, but the socket's group is 3001", "container echo-server is not in group 3001"}},
		{"directory for another uid", "one-socket.yaml", `"-o", "10001"`, `"-o", "10002"`,
			[]string{"gives /run/one-socket to uid 10002, but the broker runs as 10001"}},
		{"directory open to others", "one-socket.yaml", `"-m", "0750"`, `"-m", "0755"`,
			[]string{"mode 0755; the broker needs rwx, its group only x (and r), others nothing"}},
		{"control socket elsewhere", "one-socket.yaml", "- --ctl-socket=/run/one-socket/one-socket.ctl",
			"- --ctl-socket=/run/one-socket-ctl/one-socket.ctl",
			[]string{"is not beside --socket", `the readiness probe asks "/run/one-socket/one-socket.ctl", but the control socket is /run/one-socket-ctl/one-socket.ctl`}},
		{"socket file mounted instead of its directory", "one-socket.yaml",
			"            - name: socket-dir\n              mountPath: /run/one-socket\n            - name: policy",
			"            - name: socket-dir\n              mountPath: /run/one-socket/one.socket\n              subPath: one.socket\n            - name: policy",
			[]string{"mounts part of hostPath /run/one-socket (subPath)", "the broker container mounts nothing at /run/one-socket"}},
		{"another image", "example.yaml", "    - name: echo-client\n      image: ghcr.io/one-socket/one-socket:0.1.0\n",
			"    - name: echo-client\n      image: ghcr.io/one-socket/one-socket:latest\n",
			[]string{`container echo-client runs image "ghcr.io/one-socket/one-socket:latest", which no Containerfile builds`}},
		{"surge", "one-socket.yaml", "maxSurge: 0", "maxSurge: 1", []string{"maxSurge 1: a second broker"}},
		{"capability for the broker", "one-socket.yaml", "              drop: [\"ALL\"]\n          # Each",
			"              drop: [\"ALL\"]\n              add: [\"NET_ADMIN\"]\n          # Each", []string{"container one-socket adds capability NET_ADMIN"}},
		{"writable root", "example.yaml", "          value: server\n      securityContext:\n        allowPrivilegeEscalation: false\n        readOnlyRootFilesystem: true\n",
			"          value: server\n      securityContext:\n        allowPrivilegeEscalation: false\n        readOnlyRootFilesystem: false\n",
			[]string{"container echo-server: set readOnlyRootFilesystem: true"}},
		{"storage key the policy refuses", "vhost-user-blk.yaml",
			"        - pair\n        - vhost-user-blk-disk0\n        - --mode=server\n",
			"        - pair\n        - vhost-blk-disk0\n        - --mode=server\n",
			[]string{`container storage (uid 2101, gid 2101) may not ask for "vhost-blk-disk0#handoff" as server`,
				`container vm asks for "vhost-user-blk-disk0" as client, but no pod`}},
		{"VM uid the policy refuses", "vhost-user-blk.yaml", "    runAsUser: 2102\n", "    runAsUser: 2002\n",
			[]string{`container vm (uid 2002, gid 2102) may not ask for "vhost-user-blk-disk0#handoff" as client`}},
		{"mode written as two words", "vhost-user-blk.yaml", "        - --mode=client\n", "        - --mode\n        - client\n",
			[]string{`container vm: one-socketctl pair takes one KEY, and flags written --name=value; got ["vhost-user-blk-disk0" "client"]`}},
		{"mode one-socketctl does not know", "vhost-user-blk.yaml", "        - --mode=client\n", "        - --mode=front-end\n",
			[]string{"container vm: one-socketctl pair --mode=front-end: give none, client or server"}},
		{"the VM without handoff", "vhost-user-blk.yaml", "        - --mode=client\n        - --handoff\n", "        - --mode=client\n",
			[]string{`container storage asks for "vhost-user-blk-disk0" as server, but no pod that is bound to its node (required podAffinity on kubernetes.io/hostname) takes the other side; vhost-user-blk-vm would, but only one of the two gives one-socketctl pair --handoff`,
				`container vm asks for "vhost-user-blk-disk0" as client, but no pod`}},
		{"policy for the key without the handoff suffix", "one-socket.yaml",
			"    allow uid=2101 gid=2101 key=prefix:vhost-user-blk- mode=server\n",
			"    allow uid=2101 gid=2101 key=vhost-user-blk-disk0 mode=server\n",
			[]string{`container storage (uid 2101, gid 2101) may not ask for "vhost-user-blk-disk0#handoff" as server`}},
		{"qemu-storage-daemon on the brokered socket", "vhost-user-blk.yaml", "        - --listening-fd\n", "",
			[]string{"container storage: qemu-storage-daemon calls listen() on descriptor 3, which fails on the brokered socket (it is connected): give one-socketctl pair --listening-fd"}},
		{"listening socket without a command", "vhost-user-blk.yaml",
			"        - --listening-fd\n        - --\n        - qemu-storage-daemon\n        - --blockdev\n        - driver=file,node-name=file0,filename=/var/lib/vhost-user-blk/disk.img\n        - --blockdev\n        - driver=raw,node-name=disk0,file=file0\n        - --export\n        - type=vhost-user-blk,id=export0,node-name=disk0,writable=on,addr.type=fd,addr.str=3\n",
			"        - --listening-fd\n",
			[]string{"container storage: one-socketctl pair --listening-fd gives the listening socket to a command: give -- CMD"}},
		{"export on another descriptor", "vhost-user-blk.yaml", "addr.type=fd,addr.str=3", "addr.type=fd,addr.str=4",
			[]string{"container storage: qemu-storage-daemon does not use descriptor 3"}},
		{"QEMU listening on the brokered socket", "vhost-user-blk.yaml", "        - socket,id=c0,fd=3\n", "        - socket,id=c0,fd=3,server=on\n",
			[]string{"container vm: qemu-system-x86_64 calls listen() on descriptor 3"}},
		{"QEMU given a listening socket", "vhost-user-blk.yaml", "        - --mode=client\n        - --handoff\n", "        - --mode=client\n        - --handoff\n        - --listening-fd\n",
			[]string{"container vm: qemu-system-x86_64 takes descriptor 3 as a connected socket, but --listening-fd makes it a listening one"}},
		{"guest memory not shared", "vhost-user-blk.yaml", "memory-backend-memfd,id=mem,size=64M,share=on", "memory-backend-memfd,id=mem,size=64M",
			[]string{"container vm: qemu-system-x86_64: a vhost-user back-end needs the guest's memory shared"}},
		{"shared memory the machine does not use", "vhost-user-blk.yaml", "q35,memory-backend=mem", "q35",
			[]string{"container vm: qemu-system-x86_64: a vhost-user back-end needs the guest's memory shared"}},
		{"device on another chardev", "vhost-user-blk.yaml", "vhost-user-blk-pci,chardev=c0,", "vhost-user-blk-pci,chardev=c1,",
			[]string{"container vm: qemu-system-x86_64: no vhost-user device has chardev=c0, the socket on descriptor 3"}},
		{"VM on another node", "vhost-user-blk.yaml",
			"              app.kubernetes.io/component: storage\n          topologyKey: kubernetes.io/hostname",
			"              app.kubernetes.io/component: storage\n          topologyKey: topology.kubernetes.io/zone",
			[]string{`container vm asks for "vhost-user-blk-disk0" as client, but no pod that is bound to its node`,
				`container storage asks for "vhost-user-blk-disk0" as server, but no pod`}},
		{"disk without a size limit", "vhost-user-blk.yaml", "      emptyDir:\n        sizeLimit: 128Mi\n", "      emptyDir: {}\n",
			[]string{`volume "disk": give the emptyDir a sizeLimit`}},
		{"an image no Containerfile builds", "vhost-user-blk.yaml",
			"    - name: vm\n      image: ghcr.io/one-socket/one-socket-qemu:0.1.0\n",
			"    - name: vm\n      image: docker.io/library/qemu:7.2\n",
			[]string{`container vm runs image "docker.io/library/qemu:7.2", which no Containerfile builds`}},
		{"VM pod with the storage pod's uid", "vhost-user-blk.yaml",
			"    runAsUser: 2102\n    runAsGroup: 2102\n", "    runAsUser: 2101\n    runAsGroup: 2101\n",
			[]string{`container vm (uid 2101, gid 2101) may not ask for "vhost-user-blk-disk0#handoff" as client`,
				`container vm (uid 2101) may also take the other side of "vhost-user-blk-disk0#handoff" (server)`}},
		{"namespace not among the manifests", "example.yaml", "  name: echo-server\n  namespace: one-socket-example\n",
			"  name: echo-server\n  namespace: one-socket-examples\n", []string{`namespace "one-socket-examples" is not among the manifests`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := readManifests(t)
			text := replaceOnce(t, string(files[c.file]), c.old, c.new)
			files[c.file] = []byte(text)
			_, errs := checkFiles(t, files)
			var all []string
			for _, err := range errs {
				all = append(all, err.Error())
			}
			joined := strings.Join(all, "\n")
			for _, msg := range c.msgs {
				assert.Contains(t, joined, msg)
			}
		})
	}
}

// TestPodMonitorStrict checks that the PodMonitor decodes as strictly as
// the built-in kinds: a misspelt field is refused.
func TestPodMonitorStrict(t *testing.T) {
	text := string(readManifests(t)["podmonitor.yaml"])
	_, err := Parse("podmonitor.yaml", []byte(text))
	require.NoError(t, err)
	_, err = Parse("podmonitor.yaml", []byte(strings.Replace(text, "podMetricsEndpoints:", "podMetricEndpoints:", 1)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown field "spec.podMetricEndpoints"`)
}
