package coord

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLockMutualExclusion: workers on separate clients never hold the lock
// at the same time, and fencing revisions increase with every holder.
func TestLockMutualExclusion(t *testing.T) {
	ep := startEtcd(t)
	const workers, rounds = 3, 5
	var inside, entered atomic.Int32
	var mu sync.Mutex
	var revs []int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		c, _ := newCoord(t, ep)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				h, err := c.Lock(ctxT(t, 30*time.Second), "critical", 2*time.Second)
				if err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n != 1 {
					errs <- errors.New("two holders inside the critical section")
				}
				entered.Add(1)
				mu.Lock()
				revs = append(revs, h.Revision())
				mu.Unlock()
				time.Sleep(time.Duration(5+w) * time.Millisecond) // simulated work while holding the lock
				inside.Add(-1)
				if err := h.Unlock(ctxT(t, 5*time.Second)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := entered.Load(); n != workers*rounds {
		t.Fatalf("entered %d times, want %d", n, workers*rounds)
	}
	for i := 1; i < len(revs); i++ {
		if revs[i] <= revs[i-1] {
			t.Fatalf("fencing revisions not increasing: %v", revs)
		}
	}
}

// TestLockLossIsReported: a holder whose lock key is deleted learns it, and
// another waiter gets the lock.
func TestLockLossIsReported(t *testing.T) {
	ep := startEtcd(t)
	a, _ := newCoord(t, ep)
	b, _ := newCoord(t, ep)
	admin := newRawClient(t, ep)
	ha, err := a.Lock(ctxT(t, 10*time.Second), "l", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Unlock(context.Background())

	got := make(chan Held, 1)
	go func() {
		h, err := b.Lock(ctxT(t, 20*time.Second), "l", 2*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- h
	}()
	select {
	case <-got:
		t.Fatal("b got the lock while a holds it")
	case <-time.After(300 * time.Millisecond):
	}
	// Someone (an operator) deletes a's lock key.
	first, err := admin.Get(ctxT(t, 5*time.Second), KeyPrefix+"lock/l/", clientv3.WithFirstCreate()...)
	if err != nil || len(first.Kvs) != 1 || first.Kvs[0].CreateRevision != ha.Revision() {
		t.Fatalf("a's lock key: %v %v", first, err)
	}
	if _, err := admin.Delete(ctxT(t, 5*time.Second), string(first.Kvs[0].Key)); err != nil {
		t.Fatal(err)
	}
	if cause := waitDone(t, ha.Context(), 5*time.Second, "a's lock after its key was deleted"); !errors.Is(cause, ErrKeyLost) {
		t.Fatalf("cause = %v", cause)
	}
	var hb Held
	select {
	case hb = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("b did not get the lock")
	}
	if hb == nil {
		t.Fatal("b's lock failed")
	}
	if err := hb.Unlock(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}
