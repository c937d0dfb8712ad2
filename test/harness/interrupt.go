//go:build linux

package harness

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// interrupts closes registered clusters when the process gets SIGINT or
// SIGTERM, then lets the signal kill the process as it would have. It is
// the package's one piece of process-wide state besides the build cache,
// because signals are process-wide: clusters of parallel tests must be
// closed together before the process dies. Its goroutine runs only while a
// cluster is registered, and removing the last cluster stops it and waits.
var interrupts = &interruptSet{clusters: map[*Cluster]bool{}}

type interruptSet struct {
	mu       sync.Mutex
	clusters map[*Cluster]bool
	stop     chan struct{} // nil when no watcher runs
	done     chan struct{}
	handling bool // a signal is being handled: clusters are closing
}

func (s *interruptSet) add(c *Cluster) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clusters[c] = true
	if s.stop != nil {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	stop, done := s.stop, s.done
	// Owned by the set: remove of the last cluster closes stop and waits
	// for done.
	go s.watch(ch, stop, done)
}

func (s *interruptSet) remove(c *Cluster) {
	s.mu.Lock()
	if !s.clusters[c] {
		s.mu.Unlock()
		return
	}
	delete(s.clusters, c)
	if len(s.clusters) > 0 || s.stop == nil || s.handling {
		// While handling, the watcher itself is closing clusters and
		// ends on its own.
		s.mu.Unlock()
		return
	}
	stop, done := s.stop, s.done
	s.stop, s.done = nil, nil
	s.mu.Unlock()
	close(stop)
	<-done
}

func (s *interruptSet) watch(ch chan os.Signal, stop, done chan struct{}) {
	defer close(done)
	defer signal.Stop(ch)
	var sig os.Signal
	select {
	case <-stop:
		return
	case sig = <-ch:
	}
	s.mu.Lock()
	s.handling = true
	var cs []*Cluster
	for c := range s.clusters {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	fmt.Fprintf(os.Stderr, "harness: got %s: closing %d cluster(s) before exiting\n", sig, len(cs))
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "harness: %v\n", err)
			}
		})
	}
	wg.Wait()
	// With our channel gone and no other handler, the signal's default
	// action applies again: re-raise it so the process dies as it would
	// have without us.
	signal.Stop(ch)
	if ss, ok := sig.(syscall.Signal); ok {
		_ = syscall.Kill(os.Getpid(), ss)
	}
	s.mu.Lock()
	s.handling = false
	s.stop, s.done = nil, nil
	s.mu.Unlock()
}
