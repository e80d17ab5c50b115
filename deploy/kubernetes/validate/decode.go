// Package validate checks the Kubernetes manifests in deploy/kubernetes:
// every document decodes strictly into the Kubernetes API types, and the
// pieces agree with each other, with the broker's flags and with its
// access policy. It is a module of its own so that the Kubernetes
// libraries stay out of the main module's dependencies; run its tests
// with "go test ./..." in this directory.
package validate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// scheme knows the API groups a deployment like this one may use. A kind
// outside them is an error, as a misspelt kind is.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme,
		appsv1.AddToScheme,
		rbacv1.AddToScheme,
		policyv1.AddToScheme,
		networkingv1.AddToScheme,
		schedulingv1.AddToScheme,
		admissionregistrationv1.AddToScheme,
		addMonitoring,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strict decodes YAML into the typed object its apiVersion and kind name,
// and fails on a field the type does not have or a field given twice, as
// the API server does with strict field validation. A value of the wrong
// type fails in any mode.
var strict = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// Object is one decoded YAML document.
type Object struct {
	File string // the file's name, relative to the directory loaded
	Doc  int    // the document's number in the file, from 1
	Obj  runtime.Object
}

// Meta returns the object's metadata.
func (o Object) Meta() metav1.Object {
	m, err := metaOf(o.Obj)
	if err != nil {
		panic(err) // every type in the scheme has metadata
	}
	return m
}

// Kind returns the object's kind, such as "DaemonSet".
func (o Object) Kind() string { return o.Obj.GetObjectKind().GroupVersionKind().Kind }

// String names the object for messages: file, document, kind and name.
func (o Object) String() string {
	m := o.Meta()
	name := m.GetName()
	if ns := m.GetNamespace(); ns != "" {
		name = ns + "/" + name
	}
	return fmt.Sprintf("%s#%d %s %s", o.File, o.Doc, o.Kind(), name)
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// Decode decodes one YAML document strictly into its Kubernetes type.
func Decode(doc []byte) (runtime.Object, error) {
	obj, gvk, err := strict.Decode(doc, nil, nil)
	if err != nil {
		return nil, err
	}
	if gvk.Group == "" && gvk.Version == "" {
		return nil, errors.New("no apiVersion")
	}
	if _, err := metaOf(obj); err != nil {
		return nil, err
	}
	// The serializer clears apiVersion and kind on typed objects; put them
	// back for messages.
	obj.GetObjectKind().SetGroupVersionKind(*gvk)
	return obj, nil
}

// Parse splits data, the text of the file called name, into YAML
// documents at "---" lines and decodes each one. Documents holding only
// comments are skipped; a file with no object at all is an error.
func Parse(name string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []Object
	for n := 1; ; n++ {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		if string(bytes.TrimSpace(j)) == "null" {
			continue
		}
		obj, err := Decode(doc)
		if err != nil {
			return nil, fmt.Errorf("%s#%d: %w", name, n, err)
		}
		objs = append(objs, Object{File: name, Doc: n, Obj: obj})
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no Kubernetes object in it", name)
	}
	return objs, nil
}

// ReadDir returns the text of every .yaml and .yml file under dir, by
// name relative to dir. It does not enter directories holding a go.mod
// (Go modules such as this one, which keep test data of their own).
func ReadDir(dir string) (map[string][]byte, error) {
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = data
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .yaml files under %s", dir)
	}
	return files, nil
}

// ParseAll parses every file, in the order of their names.
func ParseAll(files map[string][]byte) ([]Object, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var all []Object
	var errs []error
	for _, name := range names {
		objs, err := Parse(name, files[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		all = append(all, objs...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return all, nil
}
