package validate

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// monitoringV1 is the Prometheus Operator's API group, whose PodMonitor is
// a custom resource: its Go types live in the operator's module, which
// this one does not take in for one kind. PodMonitor below declares the
// fields the manifests use, so that strict decoding refuses any other
// field as it would for a built-in kind.
var monitoringV1 = schema.GroupVersion{Group: "monitoring.coreos.com", Version: "v1"}

// PodMonitor is the part of monitoring.coreos.com/v1 PodMonitor that the
// manifests may use.
type PodMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              PodMonitorSpec `json:"spec"`
}

// PodMonitorSpec selects the pods to scrape and how.
type PodMonitorSpec struct {
	JobLabel            string               `json:"jobLabel,omitempty"`
	Selector            metav1.LabelSelector `json:"selector"`
	NamespaceSelector   *NamespaceSelector   `json:"namespaceSelector,omitempty"`
	PodMetricsEndpoints []PodMetricsEndpoint `json:"podMetricsEndpoints"`
	PodTargetLabels     []string             `json:"podTargetLabels,omitempty"`
	SampleLimit         *uint64              `json:"sampleLimit,omitempty"`
}

// NamespaceSelector names the namespaces whose pods are selected.
type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// PodMetricsEndpoint is one port of the selected pods to scrape.
type PodMetricsEndpoint struct {
	Port          string `json:"port,omitempty"` // a container port's name
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
}

// DeepCopyObject implements runtime.Object.
func (p *PodMonitor) DeepCopyObject() runtime.Object {
	data, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	out := new(PodMonitor)
	if err := json.Unmarshal(data, out); err != nil {
		panic(err)
	}
	return out
}

func addMonitoring(s *runtime.Scheme) error {
	s.AddKnownTypes(monitoringV1, &PodMonitor{})
	return nil
}
