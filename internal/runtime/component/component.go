// Package component defines what a component is (a value with Run and a
// readiness signal) and runs a set of them: started in dependency order,
// rolled back if one fails to start, stopped in reverse order with a bounded
// grace period.
//
// It also defines the contract between the process wiring and a component
// (deps.go): the dependencies a component is built from (Deps), what
// building it yields (Module), and the two optional faces it shows the
// node (Reporter for /v1/status, MetricsSource for metrics). It knows no
// particular component; the process wiring (internal/node) decides which
// components exist and what each depends on.
package component

import (
	"context"
	"sync"
)

// Component is one long-running part of a node (a store, an API, an agent).
// A component is built by a constructor that has no side effects; Run does
// the work.
type Component interface {
	// Name is the component's stable name (e.g. "iam").
	Name() string
	// Run starts the component and blocks until ctx ends, then cleans up and
	// returns nil. It returns a non-nil error if the component fails.
	Run(ctx context.Context) error
	// Ready is closed once the component serves its purpose; dependents
	// start only after it is closed.
	Ready() <-chan struct{}
}

// Readiness is a one-shot readiness signal components embed.
type Readiness struct {
	once sync.Once
	ch   chan struct{}
	mu   sync.Mutex
}

func (r *Readiness) init() {
	r.mu.Lock()
	if r.ch == nil {
		r.ch = make(chan struct{})
	}
	r.mu.Unlock()
}

// Ready returns the channel closed by MarkReady.
func (r *Readiness) Ready() <-chan struct{} {
	r.init()
	return r.ch
}

// MarkReady closes the ready channel; later calls do nothing.
func (r *Readiness) MarkReady() {
	r.init()
	r.once.Do(func() { close(r.ch) })
}

// IsReady reports whether MarkReady has been called.
func (r *Readiness) IsReady() bool {
	select {
	case <-r.Ready():
		return true
	default:
		return false
	}
}
