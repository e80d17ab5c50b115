package validate

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/one-socket/one-socket/internal/policy"
	"github.com/one-socket/one-socket/internal/relay"
	"github.com/one-socket/one-socket/libspbroker"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Want is what the manifests must agree with outside themselves.
type Want struct {
	// Images are the images the Containerfiles build: every container
	// runs one of them.
	Images []string
	// Version is the project's version (meson.build): the value of any
	// app.kubernetes.io/version label.
	Version string
}

// Deployment is the decoded manifests with the pod specs and the broker
// found in them.
type Deployment struct {
	Objects []Object
	Pods    []*Pod
	Broker  *Broker // nil when no broker DaemonSet was found
}

// Pod is one pod spec: a Pod's, or a workload's pod template.
type Pod struct {
	Owner     Object
	Namespace string
	Name      string // the Pod's or the workload's name
	Labels    map[string]string
	Spec      *corev1.PodSpec
}

func (p *Pod) String() string { return p.Owner.String() }

// Broker is the broker's DaemonSet, read.
type Broker struct {
	Pod       *Pod
	Container *corev1.Container
	// Init is the init container that gives the socket directory to the
	// broker.
	Init *corev1.Container
	// The daemon's flags, by name without dashes.
	Flags map[string]string
	// Socket is --socket, Dir its directory (the hostPath), CtlSocket
	// --ctl-socket.
	Socket, Dir, CtlSocket string
	// PolicyFile is --policy, PolicyText the ConfigMap's text for it.
	PolicyFile, PolicyText string
	Policy                 *policy.Policy
	// SocketGroup is --socket-group; UID and GID are the broker's.
	SocketGroup, UID, GID int64
	// DirOwner, DirGroup and DirMode are what the init container gives
	// the directory.
	DirOwner, DirGroup int64
	DirMode            os.FileMode
}

// Client is a pod that uses the broker socket.
type Client struct {
	Pod       *Pod
	Container *corev1.Container
	UID, GID  int64
	// Key and Mode are what the container asks the broker for: a shell
	// script's PAIR_KEY and PAIR_MODE, EchoClient's key (--key, else
	// PAIR_KEY) as a client, or the KEY and --mode of a command line
	// "one-socketctl pair". Key is empty when it asks for nothing.
	Key  string
	Mode libspbroker.Mode
	// Handoff is one-socketctl pair's --handoff: one end hands its
	// connection to the other over the pair, so both ends need it, and
	// the broker sees BrokerKey.
	Handoff bool
	// problems are what is wrong with the request; checkClients reports
	// them.
	problems []string
}

// Ctl is the control tool, whose pair command gets pairs for programs
// that do not speak to the broker themselves.
const Ctl = "one-socketctl"

// EchoClient is the example's client program (deploy/examples/echo-client),
// which the image holds beside the broker's two commands.
const EchoClient = "one-socket-echo-client"

// echoClientFlags are the flags EchoClient takes.
var echoClientFlags = []string{"key", "interval"}

// report collects problems; each names the object it is about.
type report struct{ errs []error }

func (r *report) add(where fmt.Stringer, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
}

// Check analyses the decoded manifests and returns the deployment and
// every problem found. A deployment is returned even with problems, as
// far as it could be read.
func Check(objs []Object, want Want) (*Deployment, []error) {
	r := &report{}
	d := &Deployment{Objects: objs}
	checkObjects(r, objs, want)
	d.Pods = podsOf(objs)
	for _, p := range d.Pods {
		checkPod(r, objs, p, want)
	}
	for _, o := range objs {
		if ds, ok := o.Obj.(*appsv1.DaemonSet); ok {
			checkDaemonSet(r, o, ds)
		}
	}
	d.Broker = findBroker(r, d.Pods)
	if d.Broker != nil {
		checkBroker(r, objs, d.Broker)
		checkClients(r, d)
	}
	return d, r.errs
}

// clusterScoped are the kinds that live in no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"PriorityClass": true, "ValidatingAdmissionPolicy": true,
	"ValidatingAdmissionPolicyBinding": true, "MutatingWebhookConfiguration": true,
	"ValidatingWebhookConfiguration": true, "PersistentVolume": true,
	"IngressClass": true, "Node": true,
}

// checkObjects checks names, namespaces and labels.
func checkObjects(r *report, objs []Object, want Want) {
	namespaces := map[string]bool{}
	for _, o := range objs {
		if o.Kind() == "Namespace" {
			namespaces[o.Meta().GetName()] = true
		}
	}
	seen := map[string]Object{}
	for _, o := range objs {
		m := o.Meta()
		name := m.GetName()
		check := validation.IsDNS1123Subdomain
		if o.Kind() == "Namespace" {
			check = validation.IsDNS1123Label
		}
		for _, msg := range check(name) {
			r.add(o, "bad name %q: %s", name, msg)
		}
		ns := m.GetNamespace()
		switch {
		case clusterScoped[o.Kind()] && ns != "":
			r.add(o, "a %s has no namespace, but namespace %q is set", o.Kind(), ns)
		case !clusterScoped[o.Kind()] && ns == "":
			// kubectl would put it in whatever namespace is current.
			r.add(o, "no namespace set")
		case !clusterScoped[o.Kind()] && !namespaces[ns]:
			r.add(o, "namespace %q is not among the manifests", ns)
		}
		id := o.Kind() + " " + ns + "/" + name
		if prev, dup := seen[id]; dup {
			r.add(o, "defined twice (also %s)", prev)
		}
		seen[id] = o
		checkLabels(r, o, m.GetLabels(), want)
	}
}

func checkLabels(r *report, where fmt.Stringer, l map[string]string, want Want) {
	for k, v := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			r.add(where, "bad label name %q: %s", k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			r.add(where, "bad value %q of label %s: %s", v, k, msg)
		}
	}
	if v, ok := l["app.kubernetes.io/version"]; ok && v != want.Version {
		r.add(where, "label app.kubernetes.io/version is %q, but the version is %q", v, want.Version)
	}
}

// podsOf returns every pod spec in the manifests.
func podsOf(objs []Object) []*Pod {
	var pods []*Pod
	add := func(o Object, labels map[string]string, spec *corev1.PodSpec) {
		pods = append(pods, &Pod{Owner: o, Namespace: o.Meta().GetNamespace(),
			Name: o.Meta().GetName(), Labels: labels, Spec: spec})
	}
	for _, o := range objs {
		switch x := o.Obj.(type) {
		case *corev1.Pod:
			add(o, x.Labels, &x.Spec)
		case *appsv1.DaemonSet:
			add(o, x.Spec.Template.Labels, &x.Spec.Template.Spec)
		case *appsv1.Deployment:
			add(o, x.Spec.Template.Labels, &x.Spec.Template.Spec)
		case *appsv1.StatefulSet:
			add(o, x.Spec.Template.Labels, &x.Spec.Template.Spec)
		}
	}
	return pods
}

// find returns the object of kind called name in namespace ns.
func find(objs []Object, kind, ns, name string) (Object, bool) {
	for _, o := range objs {
		if o.Kind() == kind && o.Meta().GetNamespace() == ns && o.Meta().GetName() == name {
			return o, true
		}
	}
	return Object{}, false
}

// containers returns a pod's init containers, then its containers.
func containers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

func isInit(spec *corev1.PodSpec, c *corev1.Container) bool {
	for i := range spec.InitContainers {
		if &spec.InitContainers[i] == c {
			return true
		}
	}
	return false
}

// checkPod checks what every pod spec needs: volumes that exist and are
// used, references that resolve, the image, and a locked-down container.
func checkPod(r *report, objs []Object, p *Pod, want Want) {
	checkLabels(r, p, p.Labels, want)
	vols := map[string]*corev1.Volume{}
	used := map[string]bool{}
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		if vols[v.Name] != nil {
			r.add(p, "volume %q declared twice", v.Name)
		}
		vols[v.Name] = v
		if cm := v.ConfigMap; cm != nil {
			o, ok := find(objs, "ConfigMap", p.Namespace, cm.Name)
			if !ok {
				r.add(p, "volume %q: no ConfigMap %q in namespace %q", v.Name, cm.Name, p.Namespace)
				continue
			}
			data := o.Obj.(*corev1.ConfigMap).Data
			for _, it := range cm.Items {
				if _, ok := data[it.Key]; !ok {
					r.add(p, "volume %q: ConfigMap %q has no key %q", v.Name, cm.Name, it.Key)
				}
			}
			if cm.DefaultMode != nil && *cm.DefaultMode&0o002 != 0 {
				r.add(p, "volume %q: files writable by everyone (defaultMode %#o); the broker refuses such a policy file", v.Name, *cm.DefaultMode)
			}
		}
		if hp := v.HostPath; hp != nil {
			if hp.Type == nil || (*hp.Type != corev1.HostPathDirectory && *hp.Type != corev1.HostPathDirectoryOrCreate) {
				r.add(p, "volume %q: hostPath %s must have type Directory or DirectoryOrCreate: pods mount the broker's directory, not a file or socket in it", v.Name, hp.Path)
			}
		}
		// Without a limit, a pod that writes to an emptyDir, such as a
		// disk image, can fill the node's disk or memory.
		if ed := v.EmptyDir; ed != nil && (ed.SizeLimit == nil || ed.SizeLimit.IsZero()) {
			r.add(p, "volume %q: give the emptyDir a sizeLimit", v.Name)
		}
	}
	if sa := p.Spec.ServiceAccountName; sa != "" && sa != "default" {
		if _, ok := find(objs, "ServiceAccount", p.Namespace, sa); !ok {
			r.add(p, "no ServiceAccount %q in namespace %q", sa, p.Namespace)
		}
	}
	names := map[string]bool{}
	for _, c := range containers(p.Spec) {
		if names[c.Name] {
			r.add(p, "two containers called %q", c.Name)
		}
		names[c.Name] = true
		for _, m := range c.VolumeMounts {
			v := vols[m.Name]
			if v == nil {
				r.add(p, "container %s mounts volume %q, which the pod does not declare", c.Name, m.Name)
				continue
			}
			used[m.Name] = true
			if m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone {
				r.add(p, "container %s: volume %q has mount propagation %s; nothing is mounted under it, so None will do", c.Name, m.Name, *m.MountPropagation)
			}
			if v.HostPath != nil {
				if m.SubPath != "" || m.SubPathExpr != "" {
					r.add(p, "container %s mounts part of hostPath %s (subPath): mount the whole directory", c.Name, v.HostPath.Path)
				}
				if m.MountPath != v.HostPath.Path {
					r.add(p, "container %s mounts hostPath %s at %s: use the same path inside, so that paths mean the same in pods and on the node", c.Name, v.HostPath.Path, m.MountPath)
				}
			}
			if v.ConfigMap != nil && !m.ReadOnly {
				r.add(p, "container %s: mount ConfigMap volume %q read-only", c.Name, m.Name)
			}
		}
		checkContainer(r, p, c, want)
	}
	for name := range vols {
		if !used[name] {
			r.add(p, "volume %q is mounted by no container", name)
		}
	}
}

// Effective security settings: the container's, else the pod's.

func runAsUser(spec *corev1.PodSpec, c *corev1.Container) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return c.SecurityContext.RunAsUser
	}
	if spec.SecurityContext != nil {
		return spec.SecurityContext.RunAsUser
	}
	return nil
}

func runAsGroup(spec *corev1.PodSpec, c *corev1.Container) *int64 {
	if c.SecurityContext != nil && c.SecurityContext.RunAsGroup != nil {
		return c.SecurityContext.RunAsGroup
	}
	if spec.SecurityContext != nil {
		return spec.SecurityContext.RunAsGroup
	}
	return nil
}

func runAsNonRoot(spec *corev1.PodSpec, c *corev1.Container) bool {
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		return *c.SecurityContext.RunAsNonRoot
	}
	return spec.SecurityContext != nil && spec.SecurityContext.RunAsNonRoot != nil && *spec.SecurityContext.RunAsNonRoot
}

func seccompRuntimeDefault(spec *corev1.PodSpec, c *corev1.Container) bool {
	p := (*corev1.SeccompProfile)(nil)
	if spec.SecurityContext != nil {
		p = spec.SecurityContext.SeccompProfile
	}
	if c.SecurityContext != nil && c.SecurityContext.SeccompProfile != nil {
		p = c.SecurityContext.SeccompProfile
	}
	return p != nil && p.Type == corev1.SeccompProfileTypeRuntimeDefault
}

// Groups returns the supplementary groups a pod's processes have:
// supplementalGroups and fsGroup.
func Groups(spec *corev1.PodSpec) []int64 {
	var g []int64
	if sc := spec.SecurityContext; sc != nil {
		g = append(g, sc.SupplementalGroups...)
		if sc.FSGroup != nil {
			g = append(g, *sc.FSGroup)
		}
	}
	return g
}

// UIDGID returns a container's effective uid and gid, or an error when
// either is left to the image.
func UIDGID(spec *corev1.PodSpec, c *corev1.Container) (uid, gid int64, err error) {
	u, g := runAsUser(spec, c), runAsGroup(spec, c)
	if u == nil || g == nil {
		return 0, 0, fmt.Errorf("container %s: set runAsUser and runAsGroup: the policy and the socket's permissions depend on them", c.Name)
	}
	return *u, *g, nil
}

// initCapabilities are all an init container may add: those that give
// the socket directory to the broker need.
var initCapabilities = []corev1.Capability{"CHOWN", "FOWNER"}

func checkContainer(r *report, p *Pod, c *corev1.Container, want Want) {
	init := isInit(p.Spec, c)
	if !slices.Contains(want.Images, c.Image) {
		r.add(p, "container %s runs image %q, which no Containerfile builds (they build %q)", c.Name, c.Image, want.Images)
	}
	if len(c.Command) == 0 {
		r.add(p, "container %s: give the command; do not depend on the image's entry point", c.Name)
	}
	sc := c.SecurityContext
	if sc == nil {
		r.add(p, "container %s has no securityContext", c.Name)
		return
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		r.add(p, "container %s: set allowPrivilegeEscalation: false", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		r.add(p, "container %s: set readOnlyRootFilesystem: true", c.Name)
	}
	if sc.Privileged != nil && *sc.Privileged {
		r.add(p, "container %s is privileged", c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		r.add(p, "container %s: drop ALL capabilities", c.Name)
	}
	if sc.Capabilities != nil {
		for _, add := range sc.Capabilities.Add {
			if !init || !slices.Contains(initCapabilities, add) {
				r.add(p, "container %s adds capability %s", c.Name, add)
			}
		}
	}
	if !seccompRuntimeDefault(p.Spec, c) {
		r.add(p, "container %s: use the seccomp profile RuntimeDefault", c.Name)
	}
	if !init {
		if !runAsNonRoot(p.Spec, c) {
			r.add(p, "container %s: set runAsNonRoot: true", c.Name)
		}
		if _, _, err := UIDGID(p.Spec, c); err != nil {
			r.add(p, "%v", err)
		}
		if u := runAsUser(p.Spec, c); u != nil && *u == 0 {
			r.add(p, "container %s runs as root", c.Name)
		}
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[res]
		lim, hasLim := c.Resources.Limits[res]
		if !hasReq || !hasLim {
			r.add(p, "container %s: give both a request and a limit for %s", c.Name, res)
		} else if req.Cmp(lim) > 0 {
			r.add(p, "container %s: %s request %s is above the limit %s", c.Name, res, req.String(), lim.String())
		}
	}
}

func checkDaemonSet(r *report, o Object, ds *appsv1.DaemonSet) {
	if ds.Spec.Selector == nil {
		r.add(o, "no selector")
		return
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		r.add(o, "bad selector: %v", err)
		return
	}
	if sel.Empty() {
		r.add(o, "the selector is empty and would take every pod in the namespace")
	}
	if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		r.add(o, "the selector %s does not match the template's labels %v", sel, ds.Spec.Template.Labels)
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.MaxSurge != nil && ru.MaxSurge.String() != "0" {
		r.add(o, "maxSurge %s: a second broker on a node finds the socket taken and exits; use 0", ru.MaxSurge.String())
	}
}

// findBroker returns the DaemonSet's pod whose container runs one-socket.
func findBroker(r *report, pods []*Pod) *Broker {
	var b *Broker
	for _, p := range pods {
		if _, ok := p.Owner.Obj.(*appsv1.DaemonSet); !ok {
			continue
		}
		for i := range p.Spec.Containers {
			c := &p.Spec.Containers[i]
			if len(c.Command) > 0 && path.Base(c.Command[0]) == "one-socket" {
				if b != nil {
					r.add(p, "a second broker DaemonSet; the first is %s", b.Pod)
					continue
				}
				b = &Broker{Pod: p, Container: c}
			}
		}
	}
	if b == nil {
		r.errs = append(r.errs, errors.New("no DaemonSet runs one-socket"))
	}
	return b
}

// ParseFlags reads a command line of flags written --name=value (one dash
// or two); a flag without "=" is a boolean and gets "". Arguments that do
// not start with a dash are returned in order.
func ParseFlags(args []string) (flags map[string]string, pos []string, err error) {
	flags = map[string]string{}
	for _, a := range args {
		if a == "-" || a == "--" || !strings.HasPrefix(a, "-") {
			pos = append(pos, a)
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if _, dup := flags[name]; dup {
			return nil, nil, fmt.Errorf("flag --%s given twice", name)
		}
		flags[name] = value
	}
	return flags, pos, nil
}

// mountOf returns the volume a container has mounted at dir, and the
// mount.
func mountOf(p *Pod, c *corev1.Container, dir string) (*corev1.Volume, *corev1.VolumeMount) {
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if m.MountPath != dir {
			continue
		}
		for j := range p.Spec.Volumes {
			if p.Spec.Volumes[j].Name == m.Name {
				return &p.Spec.Volumes[j], m
			}
		}
	}
	return nil, nil
}

// maxSocketPath is the longest path a Unix socket address can hold
// (sun_path is 108 bytes with its terminating NUL).
const maxSocketPath = 107

func checkBroker(r *report, objs []Object, b *Broker) {
	p, c := b.Pod, b.Container
	flags, pos, err := ParseFlags(c.Args)
	if err != nil {
		r.add(p, "one-socket's arguments: %v", err)
		return
	}
	if len(c.Command) > 1 || len(pos) > 0 {
		r.add(p, "one-socket takes flags only, written --name=value; got %q", append(c.Command[1:], pos...))
	}
	b.Flags = flags
	for _, name := range []string{"socket", "socket-mode", "socket-group", "ctl-socket", "policy"} {
		if flags[name] == "" {
			r.add(p, "one-socket: give --%s=VALUE", name)
		}
	}
	b.Socket, b.CtlSocket, b.PolicyFile = flags["socket"], flags["ctl-socket"], flags["policy"]
	b.Dir = path.Dir(b.Socket)
	if !path.IsAbs(b.Socket) || path.Clean(b.Socket) != b.Socket {
		r.add(p, "--socket=%s: give a clean absolute path", b.Socket)
	}
	if len(b.Socket) > maxSocketPath || len(b.CtlSocket) > maxSocketPath {
		r.add(p, "socket paths longer than %d bytes cannot be bound", maxSocketPath)
	}
	if path.Dir(b.CtlSocket) != b.Dir {
		r.add(p, "--ctl-socket=%s is not beside --socket=%s", b.CtlSocket, b.Socket)
	}
	if mode, err := strconv.ParseUint(flags["socket-mode"], 8, 32); err != nil || mode&0o007 != 0 {
		r.add(p, "--socket-mode=%s: the socket must be closed to others; the group decides who connects", flags["socket-mode"])
	}
	if g, err := strconv.ParseInt(flags["socket-group"], 10, 64); err != nil {
		r.add(p, "--socket-group=%s: give the group as a number, which means the same in every image", flags["socket-group"])
	} else {
		b.SocketGroup = g
	}
	for _, e := range c.Env {
		if e.Name == "ONE_SOCKET_PATH" && e.Value != b.Socket {
			r.add(p, "ONE_SOCKET_PATH=%s, but the daemon listens on %s", e.Value, b.Socket)
		}
	}

	// The socket's directory: a hostPath of the same name, mounted
	// writable, since the daemon creates and removes its sockets there.
	v, m := mountOf(p, c, b.Dir)
	switch {
	case v == nil:
		r.add(p, "the broker container mounts nothing at %s, the directory of its socket", b.Dir)
	case v.HostPath == nil || v.HostPath.Path != b.Dir:
		r.add(p, "volume %q at %s must be the node's directory %s (hostPath)", v.Name, b.Dir, b.Dir)
	case m.ReadOnly:
		r.add(p, "the broker must mount %s writable: it creates its sockets there", b.Dir)
	case v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate:
		r.add(p, "hostPath %s: the broker's is type DirectoryOrCreate, for a fresh node", b.Dir)
	}

	// The policy: a file of a ConfigMap mounted as a whole directory.
	if v, _ := mountOf(p, c, path.Dir(b.PolicyFile)); v == nil || v.ConfigMap == nil {
		r.add(p, "--policy=%s: its directory is not a ConfigMap volume", b.PolicyFile)
	} else if key, ok := configMapKey(v.ConfigMap, path.Base(b.PolicyFile)); !ok {
		r.add(p, "--policy=%s: ConfigMap %q has no item for %s", b.PolicyFile, v.ConfigMap.Name, path.Base(b.PolicyFile))
	} else if o, ok := find(objs, "ConfigMap", p.Namespace, v.ConfigMap.Name); ok {
		text, ok := o.Obj.(*corev1.ConfigMap).Data[key]
		if !ok {
			r.add(o, "no key %q, which the broker reads as --policy=%s", key, b.PolicyFile)
		} else if pol, err := policy.Parse(b.PolicyFile, strings.NewReader(text)); err != nil {
			r.add(o, "the policy does not load: %v", err)
		} else {
			b.PolicyText, b.Policy = text, pol
		}
	}

	// Who the broker runs as.
	uid, gid, err := UIDGID(p.Spec, c)
	if err != nil {
		r.add(p, "%v", err)
	}
	b.UID, b.GID = uid, gid
	if b.SocketGroup != gid && !slices.Contains(Groups(p.Spec), b.SocketGroup) {
		r.add(p, "the broker is not in group %d, so it cannot give the socket to it (--socket-group)", b.SocketGroup)
	}

	checkProbe(r, p, c, "readiness", c.ReadinessProbe, b.CtlSocket)
	checkProbe(r, p, c, "liveness", c.LivenessProbe, b.CtlSocket)
	checkInit(r, b)
	checkMetrics(r, objs, b)
}

// configMapKey returns the ConfigMap key a file of a configMap volume
// comes from.
func configMapKey(v *corev1.ConfigMapVolumeSource, file string) (string, bool) {
	if len(v.Items) == 0 {
		return file, true
	}
	for _, it := range v.Items {
		if it.Path == file {
			return it.Key, true
		}
	}
	return "", false
}

// checkProbe wants "one-socketctl --ctl-socket=CTL ... status".
func checkProbe(r *report, p *Pod, c *corev1.Container, what string, pr *corev1.Probe, ctl string) {
	if pr == nil || pr.Exec == nil || len(pr.Exec.Command) == 0 {
		r.add(p, "container %s: give a %s probe that runs one-socketctl status", c.Name, what)
		return
	}
	cmd := pr.Exec.Command
	flags, pos, err := ParseFlags(cmd[1:])
	switch {
	case path.Base(cmd[0]) != "one-socketctl" || err != nil || !slices.Equal(pos, []string{"status"}):
		r.add(p, "container %s: the %s probe runs %q, not one-socketctl status", c.Name, what, cmd)
	case flags["ctl-socket"] != ctl:
		r.add(p, "container %s: the %s probe asks %q, but the control socket is %s", c.Name, what, flags["ctl-socket"], ctl)
	case flags["timeout"] == "":
		r.add(p, "container %s: give the %s probe's one-socketctl a --timeout", c.Name, what)
	}
}

// checkInit finds the init container that prepares the socket directory:
// "install -d -o UID -g GID -m MODE DIR".
func checkInit(r *report, b *Broker) {
	p := b.Pod
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		argv := append(slices.Clone(c.Command), c.Args...)
		if len(argv) == 0 || path.Base(argv[0]) != "install" {
			continue
		}
		owner, group, mode, dir, err := parseInstall(argv)
		if err != nil {
			r.add(p, "init container %s: %v", c.Name, err)
			return
		}
		b.Init = c
		b.DirOwner, b.DirGroup, b.DirMode = owner, group, mode
		if dir != b.Dir {
			r.add(p, "init container %s prepares %s, but the socket is in %s", c.Name, dir, b.Dir)
		}
		if v, _ := mountOf(p, c, b.Dir); v == nil || v.HostPath == nil {
			r.add(p, "init container %s does not mount the hostPath %s", c.Name, b.Dir)
		}
		if owner != b.UID {
			r.add(p, "init container %s gives %s to uid %d, but the broker runs as %d", c.Name, dir, owner, b.UID)
		}
		if group != b.SocketGroup {
			r.add(p, "init container %s gives %s to group %d, but the socket's group is %d", c.Name, dir, group, b.SocketGroup)
		}
		if mode&0o700 != 0o700 || mode&0o010 == 0 || mode&0o007 != 0 || mode&0o020 != 0 {
			r.add(p, "init container %s: mode %#o; the broker needs rwx, its group only x (and r), others nothing", c.Name, mode)
		}
		return
	}
	r.add(p, "no init container runs install -d for %s: the kubelet would leave it to root, and the broker could not create its socket there", b.Dir)
}

func parseInstall(argv []string) (owner, group int64, mode os.FileMode, dir string, err error) {
	var dirMode bool
	var haveOwner, haveGroup, haveMode bool
	args := argv[1:]
	for len(args) > 1 {
		opt := args[0]
		switch opt {
		case "-d":
			dirMode = true
			args = args[1:]
			continue
		case "-o", "-g", "-m":
		default:
			return 0, 0, 0, "", fmt.Errorf("install: unexpected %q", opt)
		}
		val := args[1]
		args = args[2:]
		switch opt {
		case "-o":
			owner, err = strconv.ParseInt(val, 10, 64)
			haveOwner = true
		case "-g":
			group, err = strconv.ParseInt(val, 10, 64)
			haveGroup = true
		case "-m":
			var m uint64
			m, err = strconv.ParseUint(val, 8, 32)
			mode = os.FileMode(m)
			haveMode = true
		}
		if err != nil {
			return 0, 0, 0, "", fmt.Errorf("install %s %s: give a number", opt, val)
		}
	}
	if !dirMode || !haveOwner || !haveGroup || !haveMode || len(args) != 1 {
		return 0, 0, 0, "", fmt.Errorf("want install -d -o UID -g GID -m MODE DIR, got %q", argv)
	}
	return owner, group, mode, args[0], nil
}

// pairMode reads a PAIR_MODE value.
func pairMode(s string) (libspbroker.Mode, bool) {
	for m := libspbroker.ModeNone; m < libspbroker.ModeMax; m++ {
		if m.String() == s {
			return m, true
		}
	}
	return 0, false
}

// Clients returns every container, outside the broker's pod, that mounts
// the broker's directory.
func (d *Deployment) Clients() []*Client {
	var cs []*Client
	for _, p := range d.Pods {
		if p == d.Broker.Pod {
			continue
		}
		for _, c := range containers(p.Spec) {
			if v, _ := mountOf(p, c, d.Broker.Dir); v == nil {
				continue
			}
			cl := &Client{Pod: p, Container: c}
			cl.UID, cl.GID, _ = UIDGID(p.Spec, c)
			cl.readRequest()
			cs = append(cs, cl)
		}
	}
	return cs
}

// readRequest finds what the container asks the broker for: EchoClient
// asks as a client for its --key, else PAIR_KEY; any other command asks
// for PAIR_KEY in PAIR_MODE, if it has PAIR_KEY, and must then use both.
func (cl *Client) readRequest() {
	c := cl.Container
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	bad := func(format string, args ...any) {
		cl.problems = append(cl.problems, fmt.Sprintf("container %s: ", c.Name)+fmt.Sprintf(format, args...))
	}
	argv := append(slices.Clone(c.Command), c.Args...)
	if len(argv) > 0 && path.Base(argv[0]) == EchoClient {
		cl.Mode = libspbroker.ModeClient
		flags, pos, err := ParseFlags(argv[1:])
		if err != nil {
			bad("%s: %v", EchoClient, err)
			return
		}
		if len(pos) > 0 {
			bad("%s takes flags only, written --name=value; got %q", EchoClient, pos)
		}
		for name, value := range flags {
			switch {
			case !slices.Contains(echoClientFlags, name):
				bad("%s has no flag --%s", EchoClient, name)
			case name == "interval":
				if d, err := time.ParseDuration(value); err != nil || d <= 0 {
					bad("%s --interval=%s: give a positive duration such as 5s", EchoClient, value)
				}
			}
		}
		cl.Key = env["PAIR_KEY"]
		if k, ok := flags["key"]; ok {
			cl.Key = k
		}
		if cl.Key == "" {
			bad("%s has no key: give --key or PAIR_KEY", EchoClient)
		}
		if m, ok := env["PAIR_MODE"]; ok && m != libspbroker.ModeClient.String() {
			bad("PAIR_MODE is %q, but %s always asks as client", m, EchoClient)
		}
		return
	}
	if len(argv) > 0 && path.Base(argv[0]) == Ctl {
		cl.readPair(argv[1:], bad)
		return
	}
	key, ok := env["PAIR_KEY"]
	if !ok {
		return
	}
	mode, ok := pairMode(env["PAIR_MODE"])
	if !ok {
		bad("PAIR_MODE %q is not none, client or server", env["PAIR_MODE"])
		return
	}
	if key == "" {
		bad("PAIR_KEY is empty")
	}
	cl.Key, cl.Mode = key, mode
	script := strings.Join(argv, " ")
	for _, v := range []string{"$PAIR_KEY", "$PAIR_MODE"} {
		if !strings.Contains(script, v) {
			bad("the script does not use %s", v)
		}
	}
}

// readPair reads a container's command line "one-socketctl ... pair KEY
// [-- CMD]": the key and mode it asks for, whether it hands over the
// connection, and whether CMD can use descriptor 3 as it gets it. Other
// commands ask for nothing.
func (cl *Client) readPair(args []string, bad func(string, ...any)) {
	line, err := ParseCtl(args)
	if err != nil {
		bad("%s: %v", Ctl, err)
		return
	}
	if len(line.Pos) == 0 || line.Pos[0] != "pair" {
		return
	}
	if len(line.Pos) != 2 {
		bad("%s pair takes one KEY, and flags written --name=value; got %q", Ctl, line.Pos[1:])
		return
	}
	key := line.Pos[1]
	if _, ok := line.Flags["hex"]; ok {
		b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(key, "0x"), "0X"))
		if err != nil {
			bad("%s pair --hex: KEY %q is not hexadecimal", Ctl, key)
			return
		}
		key = string(b)
	}
	mode := libspbroker.ModeNone // one-socketctl's default
	if m, ok := line.Flags["mode"]; ok {
		if mode, ok = pairMode(m); !ok {
			bad("%s pair --mode=%s: give none, client or server, written --mode=MODE", Ctl, m)
			return
		}
	}
	cl.Key, cl.Mode = key, mode
	_, cl.Handoff = line.Flags["handoff"]
	_, listening := line.Flags["listening-fd"]
	if line.Exec == nil {
		if listening {
			bad("%s pair --listening-fd gives the listening socket to a command: give -- CMD", Ctl)
		}
		return
	}
	for _, msg := range fd3Problems(line.Exec, listening) {
		bad("%s", msg)
	}
}

// BrokerKey is the key the broker sees: with --handoff, one-socketctl adds
// a suffix, so that such an end pairs only with another, and the policy
// must allow that key.
func (cl *Client) BrokerKey() []byte {
	if cl.Handoff {
		return relay.HandoffKey([]byte(cl.Key))
	}
	return []byte(cl.Key)
}

// CtlLine is a command line of one-socketctl, its flags written
// --name=value.
type CtlLine struct {
	Flags map[string]string
	Pos   []string // the command, then its arguments
	Exec  []string // what follows "--" (pair's command), nil without "--"
}

// ParseCtl reads one-socketctl's arguments (without the program's
// name). Flags end at "--"; what follows it belongs to pair's command.
func ParseCtl(args []string) (CtlLine, error) {
	var line CtlLine
	if i := slices.Index(args, "--"); i >= 0 {
		args, line.Exec = args[:i], slices.Clone(args[i+1:])
		if len(line.Exec) == 0 {
			return CtlLine{}, errors.New(`nothing after "--"`)
		}
	}
	var err error
	line.Flags, line.Pos, err = ParseFlags(args)
	return line, err
}

// CtlCall is one command line of one-socketctl in the manifests.
type CtlCall struct {
	Pod       *Pod
	Container *corev1.Container
	// Where says which part of the container runs it: "command", "script"
	// or a probe, such as "readiness probe".
	Where string
	// Args are its arguments. In a script they are words split at blanks,
	// quotes and all, up to "--" or the end of the simple command: a flag
	// and its value may be two words there, as the shell allows.
	Args []string
}

// Script says whether the call is part of a shell script.
func (c *CtlCall) Script() bool { return c.Where == "script" }

func (c *CtlCall) String() string {
	return fmt.Sprintf("%s: container %s, %s", c.Pod, c.Container.Name, c.Where)
}

// ctlInScript finds "one-socketctl ARGS" in a script; ARGS end at a
// newline, "--" or a shell operator.
var ctlInScript = regexp.MustCompile(`(?:^|[\s;&|(])` + regexp.QuoteMeta(Ctl) + `((?:[ \t]+[^\s;&|()]+)*)`)

// shellComment is a comment in a script: "#" at the start of a word, to
// the end of the line (a "#" inside quotes is taken for one too).
var shellComment = regexp.MustCompile(`(?m)(^|[ \t])#.*$`)

// CtlCalls returns every command line of one-socketctl the pods run: as
// a container's command, in a probe, or in a "sh -c" script.
func (d *Deployment) CtlCalls() []*CtlCall {
	var calls []*CtlCall
	for _, p := range d.Pods {
		for _, c := range containers(p.Spec) {
			add := func(where string, args []string) {
				calls = append(calls, &CtlCall{Pod: p, Container: c, Where: where, Args: args})
			}
			argv := append(slices.Clone(c.Command), c.Args...)
			switch {
			case len(argv) > 0 && path.Base(argv[0]) == Ctl:
				add("command", argv[1:])
			case len(argv) > 2 && isShell(argv[0]) && argv[1] == "-c":
				script := shellComment.ReplaceAllString(argv[2], "")
				for _, m := range ctlInScript.FindAllStringSubmatch(script, -1) {
					words := strings.Fields(m[1])
					if i := slices.Index(words, "--"); i >= 0 {
						words = words[:i]
					}
					add("script", words)
				}
			}
			for _, pr := range []struct {
				what  string
				probe *corev1.Probe
			}{{"startup probe", c.StartupProbe}, {"readiness probe", c.ReadinessProbe}, {"liveness probe", c.LivenessProbe}} {
				if pr.probe != nil && pr.probe.Exec != nil && len(pr.probe.Exec.Command) > 0 && path.Base(pr.probe.Exec.Command[0]) == Ctl {
					add(pr.what, pr.probe.Exec.Command[1:])
				}
			}
		}
	}
	return calls
}

func isShell(name string) bool {
	switch path.Base(name) {
	case "sh", "bash", "dash":
		return true
	}
	return false
}

// checkClients checks the pods that use the broker: they reach the same
// directory, can enter it, and ask for keys the policy gives them.
func checkClients(r *report, d *Deployment) {
	b := d.Broker
	for _, p := range d.Pods {
		for _, v := range p.Spec.Volumes {
			if v.HostPath != nil && v.HostPath.Path != b.Dir {
				r.add(p, "hostPath %s: the broker's directory is %s", v.HostPath.Path, b.Dir)
			}
		}
	}
	clients := d.Clients()
	if len(clients) == 0 {
		r.errs = append(r.errs, errors.New("no pod uses the broker: the example is missing"))
	}
	for _, cl := range clients {
		p, c := cl.Pod, cl.Container
		if _, m := mountOf(p, c, b.Dir); !m.ReadOnly {
			r.add(p, "container %s: mount %s read-only; connecting needs no write access to the directory", c.Name, b.Dir)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["ONE_SOCKET_PATH"] != b.Socket {
			r.add(p, "container %s: ONE_SOCKET_PATH is %q, but the broker listens on %s", c.Name, env["ONE_SOCKET_PATH"], b.Socket)
		}
		if cl.UID == b.UID {
			r.add(p, "container %s runs as the broker's uid %d and could use its control socket", c.Name, b.UID)
		}
		if cl.GID != b.SocketGroup && !slices.Contains(Groups(p.Spec), b.SocketGroup) {
			r.add(p, "container %s is not in group %d and cannot enter %s (add it to supplementalGroups)", c.Name, b.SocketGroup, b.Dir)
		}
		for _, msg := range cl.problems {
			r.add(p, "%s", msg)
		}
		if cl.Key == "" || b.Policy == nil {
			continue
		}
		mode := cl.Mode
		key := cl.BrokerKey()
		cred := policy.Cred{UID: uint32(cl.UID), GID: uint32(cl.GID)}
		if dec := b.Policy.Allow(cred, key, mode); !dec.Allowed {
			r.add(p, "container %s (uid %d, gid %d) may not ask for %q as %s: %s", c.Name, cl.UID, cl.GID, key, mode, dec.Reason)
		}
		if mode != libspbroker.ModeNone {
			if dec := b.Policy.Allow(cred, key, mode.Peer()); dec.Allowed {
				r.add(p, "container %s (uid %d) may also take the other side of %q (%s): %s", c.Name, cl.UID, key, mode.Peer(), dec.Reason)
			}
		}
		// 65534 is how the broker sees a uid with no mapping in its user
		// namespace; such a client must get nothing.
		for m := libspbroker.ModeNone; m < libspbroker.ModeMax; m++ {
			if dec := b.Policy.Allow(policy.Cred{UID: 65534, GID: 65534}, key, m); dec.Allowed {
				r.add(p, "the policy lets uid 65534 (unknown) ask for %q as %s: %s", key, m, dec.Reason)
			}
		}
	}
	checkPartners(r, clients)
}

// checkPartners checks that every client has a peer on the same node:
// the other side of its key, in a pod the scheduler must put beside it.
func checkPartners(r *report, clients []*Client) {
	for _, a := range clients {
		if a.Key == "" {
			continue
		}
		var found bool
		var why string
		for _, b := range clients {
			if b == a || b.Key != a.Key || b.Mode != a.Mode.Peer() {
				continue
			}
			if b.Handoff != a.Handoff {
				why = fmt.Sprintf("; %s would, but only one of the two gives %s pair --handoff, and the broker never pairs such an end with one that does not (it sees the key%s)",
					b.Pod.Name, Ctl, relay.HandoffSuffix)
				continue
			}
			if b.Pod.Namespace == a.Pod.Namespace && (sameNode(a.Pod, b.Pod) || sameNode(b.Pod, a.Pod)) {
				found = true
			}
		}
		if !found {
			r.add(a.Pod, "container %s asks for %q as %s, but no pod that is bound to its node (required podAffinity on kubernetes.io/hostname) takes the other side%s",
				a.Container.Name, a.Key, a.Mode, why)
		}
	}
}

// sameNode says whether a must be scheduled on b's node.
func sameNode(a, b *Pod) bool {
	if a.Spec.Affinity == nil || a.Spec.Affinity.PodAffinity == nil {
		return false
	}
	for _, term := range a.Spec.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		if term.TopologyKey != corev1.LabelHostname || term.LabelSelector == nil {
			continue
		}
		if len(term.Namespaces) > 0 && !slices.Contains(term.Namespaces, b.Namespace) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(b.Labels)) {
			return true
		}
	}
	return false
}

// checkMetrics checks that the broker's --metrics-listen, its container
// port, the prometheus.io annotations of its pods and every PodMonitor
// agree: the port is listened on, named, announced and scraped.
func checkMetrics(r *report, objs []Object, b *Broker) {
	p, c := b.Pod, b.Container
	listen, ok := b.Flags["metrics-listen"]
	if !ok {
		for _, o := range objs {
			if _, ok := o.Obj.(*PodMonitor); ok {
				r.add(o, "a PodMonitor, but the broker has no --metrics-listen")
			}
		}
		return
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		r.add(p, "--metrics-listen=%s: give :PORT, the pod's every address: %v", listen, err)
		return
	}
	if host != "" {
		r.add(p, "--metrics-listen=%s: a pod's address is not known in advance; give :%s", listen, port)
	}
	var named string
	for _, cp := range c.Ports {
		if strconv.Itoa(int(cp.ContainerPort)) == port {
			named = cp.Name
		}
	}
	if named == "" {
		r.add(p, "--metrics-listen=%s: the broker container declares no port %s", listen, port)
	}
	ann := p.Owner.Meta().GetAnnotations()
	if ds, ok := p.Owner.Obj.(*appsv1.DaemonSet); ok {
		ann = ds.Spec.Template.Annotations
	}
	for k, v := range map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": "/metrics"} {
		if ann[k] != v {
			r.add(p, "annotation %s is %q; the broker's metrics want %q", k, ann[k], v)
		}
	}
	for _, o := range objs {
		pm, ok := o.Obj.(*PodMonitor)
		if !ok {
			continue
		}
		if pm.Namespace != p.Namespace && (pm.Spec.NamespaceSelector == nil ||
			!(pm.Spec.NamespaceSelector.Any || slices.Contains(pm.Spec.NamespaceSelector.MatchNames, p.Namespace))) {
			r.add(o, "selects no pod of namespace %s, the broker's", p.Namespace)
		}
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		switch {
		case err != nil:
			r.add(o, "selector: %v", err)
		case sel.Empty():
			r.add(o, "an empty selector selects every pod")
		case !sel.Matches(labels.Set(p.Labels)):
			r.add(o, "the selector %s does not select the broker's pods (%v)", sel, p.Labels)
		}
		if len(pm.Spec.PodMetricsEndpoints) == 0 {
			r.add(o, "no podMetricsEndpoints")
		}
		for _, ep := range pm.Spec.PodMetricsEndpoints {
			if ep.Port != named || named == "" {
				r.add(o, "endpoint port %q is not the broker's metrics port %q", ep.Port, named)
			}
			if ep.Path != "" && ep.Path != "/metrics" {
				r.add(o, "endpoint path %q: the broker serves /metrics", ep.Path)
			}
			if ep.Scheme != "" && ep.Scheme != "http" {
				r.add(o, "endpoint scheme %q: the broker serves plain HTTP", ep.Scheme)
			}
		}
	}
}
