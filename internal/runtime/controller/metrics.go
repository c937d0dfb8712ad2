package controller

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reconcile results as reported by the reconciles_total metric.
const (
	resultSuccess = "success" // succeeded, nothing scheduled
	resultRequeue = "requeue" // succeeded with RequeueAfter
	resultError   = "error"   // failed (or panicked); retried with backoff
)

// metrics are one controller's Prometheus collectors, labelled with its
// name so several controllers can share a registry.
type metrics struct {
	reg        prometheus.Registerer
	reconciles *prometheus.CounterVec
	duration   prometheus.Histogram
	depth      prometheus.Gauge
	checkpoint prometheus.Gauge
	leader     prometheus.Gauge // singletons only; nil otherwise
}

func newMetrics(name string, reg prometheus.Registerer, singleton bool) *metrics {
	labels := prometheus.Labels{"controller": name}
	m := &metrics{
		reg: reg,
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ultracloud", Subsystem: "controller", Name: "reconciles_total",
			Help:        "Reconciles by result: success, requeue (succeeded with RequeueAfter) or error.",
			ConstLabels: labels,
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "ultracloud", Subsystem: "controller", Name: "reconcile_duration_seconds",
			Help:        "Time one reconcile took.",
			ConstLabels: labels,
			Buckets:     prometheus.ExponentialBuckets(0.001, 4, 9), // 1ms .. ~65s
		}),
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ultracloud", Subsystem: "controller", Name: "queue_depth",
			Help:        "Keys ready to be reconciled and waiting for a worker.",
			ConstLabels: labels,
		}),
		checkpoint: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ultracloud", Subsystem: "controller", Name: "checkpoint_revision",
			Help:        "Revision through which every change has been reconciled successfully.",
			ConstLabels: labels,
		}),
	}
	if singleton {
		m.leader = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ultracloud", Subsystem: "controller", Name: "leader",
			Help:        "1 while this instance of a singleton controller leads (and may reconcile), else 0.",
			ConstLabels: labels,
		})
	}
	return m
}

func (m *metrics) collectors() []prometheus.Collector {
	cs := []prometheus.Collector{m.reconciles, m.duration, m.depth, m.checkpoint}
	if m.leader != nil {
		cs = append(cs, m.leader)
	}
	return cs
}

// setLeader reports whether a singleton leads.
func (m *metrics) setLeader(leading bool) {
	if m.leader == nil {
		return
	}
	v := 0.0
	if leading {
		v = 1
	}
	m.leader.Set(v)
}

// register adds the collectors to the registerer, if any; on failure none
// stays registered.
func (m *metrics) register() error {
	if m.reg == nil {
		return nil
	}
	var done []prometheus.Collector
	for _, c := range m.collectors() {
		if err := m.reg.Register(c); err != nil {
			for _, d := range done {
				m.reg.Unregister(d)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return fmt.Errorf("controller: metrics already registered: is another controller running with the same name? %w", err)
			}
			return fmt.Errorf("controller: registering metrics: %w", err)
		}
		done = append(done, c)
	}
	return nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
