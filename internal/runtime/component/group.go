package component

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// State is where a component is in its lifecycle.
type State string

const (
	StatePending  State = "pending"
	StateStarting State = "starting"
	StateReady    State = "ready"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateFailed   State = "failed"
)

// Unit is a component plus the names of the components it needs running
// (and ready) before it starts.
type Unit struct {
	Component Component
	DependsOn []string
}

// Options tune a Group.
type Options struct {
	// StartTimeout bounds how long one component may take to become ready.
	StartTimeout time.Duration
	// StopGrace bounds how long one component may take to return from Run
	// after its context is cancelled.
	StopGrace time.Duration
	Logger    *slog.Logger
}

// Group runs a set of components.
type Group struct {
	opts  Options
	order []Unit // dependency order

	mu     sync.Mutex
	states map[string]State
	errs   map[string]error
}

// Status is a snapshot of one component's state.
type Status struct {
	Name  string
	State State
	Err   error
}

// ErrDependencyCycle is returned when the units' dependencies form a cycle.
var ErrDependencyCycle = errors.New("component: dependency cycle")

// NewGroup validates the units (unique names, known dependencies, no cycles)
// and orders them so every component comes after what it depends on; ties
// keep the given order.
func NewGroup(units []Unit, opts Options) (*Group, error) {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = time.Minute
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = 15 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	byName := make(map[string]int, len(units))
	for i, u := range units {
		n := u.Component.Name()
		if _, dup := byName[n]; dup {
			return nil, fmt.Errorf("component: %q listed twice", n)
		}
		byName[n] = i
	}
	for _, u := range units {
		for _, d := range u.DependsOn {
			if _, ok := byName[d]; !ok {
				return nil, fmt.Errorf("component: %q depends on %q, which is not in this process (add its role or remove the dependency)", u.Component.Name(), d)
			}
		}
	}
	// Kahn's algorithm, stable in the given order.
	indeg := make([]int, len(units))
	users := make([][]int, len(units))
	for i, u := range units {
		for _, d := range u.DependsOn {
			j := byName[d]
			indeg[i]++
			users[j] = append(users[j], i)
		}
	}
	var ready []int
	for i := range units {
		if indeg[i] == 0 {
			ready = append(ready, i)
		}
	}
	var order []Unit
	for len(ready) > 0 {
		sort.Ints(ready)
		i := ready[0]
		ready = ready[1:]
		order = append(order, units[i])
		for _, k := range users[i] {
			indeg[k]--
			if indeg[k] == 0 {
				ready = append(ready, k)
			}
		}
	}
	if len(order) != len(units) {
		return nil, ErrDependencyCycle
	}
	g := &Group{opts: opts, order: order, states: map[string]State{}, errs: map[string]error{}}
	for _, u := range order {
		g.states[u.Component.Name()] = StatePending
	}
	return g, nil
}

// Order returns the component names in start order.
func (g *Group) Order() []string {
	names := make([]string, len(g.order))
	for i, u := range g.order {
		names[i] = u.Component.Name()
	}
	return names
}

// Statuses returns every component's state in start order.
func (g *Group) Statuses() []Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Status, 0, len(g.order))
	for _, u := range g.order {
		n := u.Component.Name()
		out = append(out, Status{Name: n, State: g.states[n], Err: g.errs[n]})
	}
	return out
}

// Ready reports whether every component is ready.
func (g *Group) Ready() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.states {
		if s != StateReady {
			return false
		}
	}
	return true
}

func (g *Group) set(name string, s State, err error) {
	g.mu.Lock()
	g.states[name] = s
	if err != nil {
		g.errs[name] = err
	}
	g.mu.Unlock()
}

type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // valid after done is closed
}

// Run starts every component in order, waiting for each to be ready before
// starting the next. It then blocks until ctx ends or a component's Run
// returns, and stops the started components in reverse order, giving each
// StopGrace to return. It returns nil after a clean stop caused by ctx, and
// otherwise an error naming the component that failed (or failed to stop).
func (g *Group) Run(ctx context.Context) error {
	log := g.opts.Logger
	var started []*running
	failed := make(chan *running, len(g.order))

	var cause error
	for _, u := range g.order {
		c := u.Component
		name := c.Name()
		g.set(name, StateStarting, nil)
		log.Info("component starting", "component", name)
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		r := &running{name: name, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(r.done)
			r.err = c.Run(cctx)
			if r.err == nil && cctx.Err() == nil {
				r.err = errors.New("returned before it was asked to stop")
			}
			if cctx.Err() == nil {
				failed <- r
			}
		}()
		started = append(started, r)

		timer := time.NewTimer(g.opts.StartTimeout)
		select {
		case <-c.Ready():
			timer.Stop()
			g.set(name, StateReady, nil)
			log.Info("component ready", "component", name)
			continue
		case <-r.done:
			timer.Stop()
			cause = fmt.Errorf("component %s failed to start: %w", name, r.err)
			g.set(name, StateFailed, r.err)
			<-failed // drain its own report
		case <-timer.C:
			cause = fmt.Errorf("component %s was not ready within %s", name, g.opts.StartTimeout)
			g.set(name, StateFailed, cause)
		case <-ctx.Done():
			timer.Stop()
		}
		break
	}

	if cause == nil && ctx.Err() == nil {
		select {
		case <-ctx.Done():
			log.Info("stopping components", "reason", context.Cause(ctx))
		case r := <-failed:
			cause = fmt.Errorf("component %s failed: %w", r.name, r.err)
			g.set(r.name, StateFailed, r.err)
			log.Error("component failed; stopping the others", "component", r.name, "err", r.err)
		}
	}

	// Stop in reverse start order.
	for i := len(started) - 1; i >= 0; i-- {
		r := started[i]
		select {
		case <-r.done:
			if r.err != nil && g.stateOf(r.name) != StateFailed {
				g.set(r.name, StateFailed, r.err)
				cause = errors.Join(cause, fmt.Errorf("component %s failed: %w", r.name, r.err))
			}
			continue
		default:
		}
		g.set(r.name, StateStopping, nil)
		log.Info("component stopping", "component", r.name)
		r.cancel()
		timer := time.NewTimer(g.opts.StopGrace)
		select {
		case <-r.done:
			timer.Stop()
			if r.err != nil && !errors.Is(r.err, context.Canceled) {
				g.set(r.name, StateFailed, r.err)
				cause = errors.Join(cause, fmt.Errorf("component %s failed while stopping: %w", r.name, r.err))
				continue
			}
			g.set(r.name, StateStopped, nil)
			log.Info("component stopped", "component", r.name)
		case <-timer.C:
			err := fmt.Errorf("component %s did not stop within %s", r.name, g.opts.StopGrace)
			g.set(r.name, StateFailed, err)
			cause = errors.Join(cause, err)
			log.Error("component did not stop in time", "component", r.name, "grace", g.opts.StopGrace)
		}
	}
	return cause
}

func (g *Group) stateOf(name string) State {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.states[name]
}
