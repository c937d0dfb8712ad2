package component

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a component whose behaviour a test scripts.
type fake struct {
	Readiness
	name       string
	log        *eventLog
	failStart  error      // Run returns this before becoming ready
	failLater  chan error // Run returns what arrives here after ready
	hang       bool       // ignore ctx on stop
	neverReady bool
}

type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(s string) {
	l.mu.Lock()
	l.events = append(l.events, s)
	l.mu.Unlock()
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, " ")
}

func (f *fake) Name() string { return f.name }

func (f *fake) Run(ctx context.Context) error {
	f.log.add("start:" + f.name)
	if f.failStart != nil {
		return f.failStart
	}
	if !f.neverReady {
		f.MarkReady()
	}
	select {
	case <-ctx.Done():
	case err := <-f.failLater:
		f.log.add("fail:" + f.name)
		return err
	}
	if f.hang {
		time.Sleep(time.Hour)
	}
	f.log.add("stop:" + f.name)
	return nil
}

func newFake(l *eventLog, name string) *fake {
	return &fake{name: name, log: l, failLater: make(chan error, 1)}
}

func TestOrderAndReverseStop(t *testing.T) {
	l := &eventLog{}
	a, b, c := newFake(l, "a"), newFake(l, "b"), newFake(l, "c")
	// Given out of order: c needs b, b needs a.
	g, err := NewGroup([]Unit{{Component: c, DependsOn: []string{"b"}}, {Component: b, DependsOn: []string{"a"}}, {Component: a}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(g.Order(), ","); got != "a,b,c" {
		t.Fatalf("order = %s, want a,b,c", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	<-c.Ready()
	// The group records readiness just after the component signals it.
	deadline := time.Now().Add(5 * time.Second)
	for !g.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("group not ready 5s after every component is")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("clean stop returned %v", err)
	}
	if got, want := l.String(), "start:a start:b start:c stop:c stop:b stop:a"; got != want {
		t.Fatalf("events = %q, want %q", got, want)
	}
}

func TestStartFailureRollsBack(t *testing.T) {
	l := &eventLog{}
	a, b, c := newFake(l, "a"), newFake(l, "b"), newFake(l, "c")
	b.failStart = errors.New("port in use")
	g, err := NewGroup([]Unit{{Component: a}, {Component: b, DependsOn: []string{"a"}}, {Component: c, DependsOn: []string{"b"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = g.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "component b failed to start: port in use") {
		t.Fatalf("err = %v", err)
	}
	if got, want := l.String(), "start:a start:b stop:a"; got != want {
		t.Fatalf("events = %q, want %q (c must never start, a must be stopped)", got, want)
	}
}

func TestRuntimeFailureStopsOthers(t *testing.T) {
	l := &eventLog{}
	a, b := newFake(l, "a"), newFake(l, "b")
	g, err := NewGroup([]Unit{{Component: a}, {Component: b, DependsOn: []string{"a"}}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	<-b.Ready()
	a.failLater <- errors.New("disk gone")
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "component a failed: disk gone") {
		t.Fatalf("err = %v", err)
	}
	if !strings.HasSuffix(l.String(), "fail:a stop:b") {
		t.Fatalf("events = %q", l.String())
	}
	for _, s := range g.Statuses() {
		if s.Name == "a" && s.State != StateFailed {
			t.Fatalf("a state = %s, want failed", s.State)
		}
	}
}

func TestStopGraceExceeded(t *testing.T) {
	l := &eventLog{}
	a := newFake(l, "a")
	a.hang = true
	g, err := NewGroup([]Unit{{Component: a}}, Options{StopGrace: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	<-a.Ready()
	cancel()
	err = <-done
	if err == nil || !strings.Contains(err.Error(), "did not stop within 50ms") {
		t.Fatalf("err = %v", err)
	}
}

func TestStartTimeout(t *testing.T) {
	l := &eventLog{}
	a := newFake(l, "a")
	a.neverReady = true
	g, _ := NewGroup([]Unit{{Component: a}}, Options{StartTimeout: 50 * time.Millisecond})
	err := g.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not ready within") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadGraphs(t *testing.T) {
	l := &eventLog{}
	a, b := newFake(l, "a"), newFake(l, "b")
	if _, err := NewGroup([]Unit{{Component: a, DependsOn: []string{"b"}}, {Component: b, DependsOn: []string{"a"}}}, Options{}); !errors.Is(err, ErrDependencyCycle) {
		t.Fatalf("cycle: err = %v", err)
	}
	if _, err := NewGroup([]Unit{{Component: a, DependsOn: []string{"zz"}}}, Options{}); err == nil || !strings.Contains(err.Error(), `depends on "zz"`) {
		t.Fatalf("unknown dep: err = %v", err)
	}
	if _, err := NewGroup([]Unit{{Component: a}, {Component: a}}, Options{}); err == nil {
		t.Fatal("duplicate accepted")
	}
}
