package storetest

// Scenarios of CompareRangeEmpty: the "nothing under this prefix" condition
// a parent's delete uses to refuse while children exist, race-free.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// RangeEmpty builds a CompareRangeEmpty over [key, end).
func RangeEmpty(key, end string) storage.Compare {
	return storage.Compare{Key: []byte(key), Target: storage.CompareRangeEmpty, RangeEnd: []byte(end)}
}

// PrefixEmpty builds a CompareRangeEmpty over every key under prefix.
func PrefixEmpty(prefix string) storage.Compare {
	return storage.Compare{Key: []byte(prefix), Target: storage.CompareRangeEmpty, RangeEnd: storage.PrefixEnd([]byte(prefix))}
}

func exists(key string) storage.Compare {
	return storage.Compare{Key: []byte(key), Target: storage.CompareExists}
}

func testRangeEmptyCompare(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	b, _ := revs(t, s)
	const members = "m/p/net/"
	holds := func(t *testing.T, what string, want bool, c ...storage.Compare) {
		t.Helper()
		// Read-only (served from a snapshot) and writing (evaluated by the
		// writer) transactions must agree.
		ro := MustTxn(t, s, storage.Txn{If: c, Then: []storage.Op{GetOp("probe")}})
		if ro.Succeeded != want {
			t.Errorf("%s: read-only txn succeeded=%v, want %v", what, ro.Succeeded, want)
		}
		cur, _ := revs(t, s)
		rw := MustTxn(t, s, storage.Txn{If: c, Then: []storage.Op{DelOp("probe")}, Else: []storage.Op{DelOp("probe")}})
		if rw.Succeeded != want || rw.Revision != cur {
			t.Errorf("%s: txn with writes succeeded=%v at +%d, want %v at +%d", what, rw.Succeeded, rw.Revision-b, want, cur-b)
		}
	}

	holds(t, "empty store", true, PrefixEmpty(members))
	MustPut(t, s, "m/p/net", "the network itself sorts before its members")
	MustPut(t, s, "m/p/net0", "a key exactly at the range end")
	MustPut(t, s, "m/p/net.", "a sibling before the range")
	holds(t, "keys only just outside the range", true, PrefixEmpty(members))
	holds(t, "keys only just outside the range, explicit end", true, RangeEmpty(members, "m/p/net0"))

	MustPut(t, s, "m/p/net/port-1", "p1")
	holds(t, "a key inside", false, PrefixEmpty(members))
	holds(t, "a range ending at the key", true, RangeEmpty(members, "m/p/net/port-1"))
	holds(t, "a range starting at the key", false, RangeEmpty("m/p/net/port-1", "m/p/net/port-1\x00"))
	holds(t, "a range after the key", true, RangeEmpty("m/p/net/port-1\x00", "m/p/net0"))
	holds(t, "one failing compare among holding ones", false, exists("m/p/net"), PrefixEmpty(members), exists("m/p/net0"))

	MustPut(t, s, "m/p/net/port-2", "p2")
	if _, _, err := storage.Delete(ctx, s, []byte("m/p/net/port-1")); err != nil {
		t.Fatal(err)
	}
	holds(t, "one of two deleted", false, PrefixEmpty(members))
	MustTxn(t, s, storage.Txn{Then: []storage.Op{PutOp("m/p/net/port-2", "p2'"), DelOp("m/p/net/port-2")}})
	holds(t, "every key deleted", true, PrefixEmpty(members))
	// The history of the deleted keys is still there to watch: it does not
	// count as a key.
	w, err := s.Watch(ctx, []byte(members), b+1)
	if err != nil {
		t.Fatal(err)
	}
	if evs := collect(t, w, 5); evs[4].Type != storage.EventDelete {
		t.Fatalf("history of the range ends with %s", evString(evs[4], b))
	}
	w.Close()

	// The compares see the state before the transaction: its own writes
	// do not change them, whichever branch runs.
	res := MustTxn(t, s, storage.Txn{
		If:   []storage.Compare{PrefixEmpty(members)},
		Then: []storage.Op{PutOp("m/p/net/port-3", "p3")},
	})
	if !res.Succeeded {
		t.Fatalf("put into an empty range, guarded by its emptiness: %+v", res)
	}
	holds(t, "after the guarded put", false, PrefixEmpty(members))
	res = MustTxn(t, s, storage.Txn{
		If:   []storage.Compare{PrefixEmpty(members)},
		Then: []storage.Op{PutOp("wrong", "branch")},
		Else: []storage.Op{DelOp("m/p/net/port-3")},
	})
	if res.Succeeded || !res.Results[0].Found {
		t.Fatalf("delete of the last key in the else branch: %+v", res)
	}
	holds(t, "after the else branch emptied it", true, PrefixEmpty(members))
	if _, err := s.Get(ctx, []byte("wrong")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the then branch ran too: %v", err)
	}
}

func testRangeEmptyInvalid(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	MustPut(t, s, "a", "1")
	b, _ := revs(t, s)
	bigKey := bytes.Repeat([]byte("k"), storage.MaxKeySize+1)
	put := []storage.Op{PutOp("written", "v")}
	for name, c := range map[string]struct {
		cmp  storage.Compare
		want error
	}{
		"end equals key":          {RangeEmpty("b", "b"), storage.ErrInvalidRange},
		"end before key":          {RangeEmpty("b", "a"), storage.ErrInvalidRange},
		"no end":                  {storage.Compare{Key: []byte("b"), Target: storage.CompareRangeEmpty}, storage.ErrInvalidRange},
		"end on a key compare":    {storage.Compare{Key: []byte("a"), Target: storage.CompareExists, RangeEnd: []byte("b")}, storage.ErrInvalidRange},
		"empty start":             {storage.Compare{Target: storage.CompareRangeEmpty, RangeEnd: []byte("b")}, storage.ErrEmptyKey},
		"end larger than a key":   {storage.Compare{Key: []byte("a"), Target: storage.CompareRangeEmpty, RangeEnd: bigKey}, storage.ErrKeyTooLarge},
		"start larger than a key": {storage.Compare{Key: bigKey, Target: storage.CompareRangeEmpty, RangeEnd: append(bigKey, 'x')}, storage.ErrKeyTooLarge},
	} {
		for _, txn := range []storage.Txn{
			{If: []storage.Compare{exists("a"), c.cmp}, Then: put, Else: put},
			{If: []storage.Compare{c.cmp}, Then: []storage.Op{GetOp("a")}}, // read-only
		} {
			_, err := s.Txn(ctx, txn)
			if !errors.Is(err, c.want) {
				t.Errorf("%s: err = %v, want %v", name, err, c.want)
			}
		}
	}
	checkRev(t, s, b, 0)
	if _, err := s.Get(ctx, []byte("written")); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("a rejected transaction wrote: %v", err)
	}
	// The smallest valid range: one key.
	if res := MustTxn(t, s, storage.Txn{If: []storage.Compare{RangeEmpty("a", "a\x00")}}); res.Succeeded {
		t.Fatalf("[a, a\\x00) with a present held: %+v", res)
	}
}

// testRangeEmptyVersusExists races, many times over, the two transactions
// a parent and child resource need: "create a member if its network
// exists" and "delete the network if it has no member". Exactly one of each
// pair must win, whatever order they are committed in (and whether or not
// they share a commit group).
func testRangeEmptyVersusExists(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	rounds, networks := 25, 8
	if h.Quick {
		rounds, networks = 10, 4
	}
	var created, deleted int
	for r := range rounds {
		setup := make([]storage.Op, networks)
		for n := range networks {
			setup[n] = PutOp(fmt.Sprintf("net/%d/%d", r, n), "n")
		}
		MustTxn(t, s, storage.Txn{Then: setup})
		type outcome struct{ create, del bool }
		out := make([]outcome, networks)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for n := range networks {
			network := fmt.Sprintf("net/%d/%d", r, n)
			members := fmt.Sprintf("member/%d/%d/", r, n)
			wg.Add(2)
			go func() {
				defer wg.Done()
				<-start
				res, err := s.Txn(ctx, storage.Txn{
					If:   []storage.Compare{exists(network)},
					Then: []storage.Op{PutOp(members+"port", "p")},
				})
				if err != nil {
					t.Error(err)
					return
				}
				out[n].create = res.Succeeded
			}()
			go func() {
				defer wg.Done()
				<-start
				res, err := s.Txn(ctx, storage.Txn{
					If:   []storage.Compare{PrefixEmpty(members)},
					Then: []storage.Op{DelOp(network)},
				})
				if err != nil {
					t.Error(err)
					return
				}
				out[n].del = res.Succeeded
			}()
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		for n, o := range out {
			if o.create == o.del {
				t.Fatalf("round %d network %d: member created %v, network deleted %v: exactly one must win", r, n, o.create, o.del)
			}
			if o.create {
				created++
			} else {
				deleted++
			}
		}
	}
	t.Logf("%d pairs: the member won %d, the delete %d", rounds*networks, created, deleted)
}

// testRangeEmptySeesConcurrentDeletes churns members under a network
// (create if the network exists, then delete) while deleters retry the
// guarded network delete. Every member must have come and gone before the
// delete's revision; once the last member is gone the delete must win.
func testRangeEmptySeesConcurrentDeletes(t *testing.T, h Harness) {
	ctx := context.Background()
	s := open(t, h)
	rounds, churners, deleters := 10, 8, 2
	if h.Quick {
		rounds, churners = 4, 4
	}
	for r := range rounds {
		network := fmt.Sprintf("net/%d", r)
		members := fmt.Sprintf("member/%d/", r)
		MustTxn(t, s, storage.Txn{Then: []storage.Op{PutOp(network, "n"), PutOp(members+"first", "p")}})
		// lives[c] is churner c's member; the last one is the member that
		// exists when the round starts (created at revision 0 for the check).
		type life struct {
			live          bool
			created, gone int64
		}
		lives := make([]life, churners+1)
		var delRev sync.Map
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := s.Txn(ctx, storage.Txn{Then: []storage.Op{DelOp(members + "first")}})
			if err != nil {
				t.Error(err)
				return
			}
			lives[churners] = life{live: true, gone: res.Revision}
		}()
		for c := range churners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				key := fmt.Sprintf("%sport-%d", members, c)
				res, err := s.Txn(ctx, storage.Txn{If: []storage.Compare{exists(network)}, Then: []storage.Op{PutOp(key, "p")}})
				if err != nil {
					t.Error(err)
					return
				}
				if !res.Succeeded {
					return
				}
				created := res.Revision
				res, err = s.Txn(ctx, storage.Txn{Then: []storage.Op{DelOp(key)}})
				if err != nil {
					t.Error(err)
					return
				}
				lives[c] = life{live: true, created: created, gone: res.Revision}
			}()
		}
		for d := range deleters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					res, err := s.Txn(ctx, storage.Txn{
						If:   []storage.Compare{PrefixEmpty(members)},
						Then: []storage.Op{DelOp(network)},
					})
					if err != nil {
						t.Error(err)
						return
					}
					if res.Succeeded {
						if res.Results[0].Found {
							delRev.Store(d, res.Revision)
						}
						return
					}
					if _, err := s.Get(ctx, []byte(network)); errors.Is(err, storage.ErrNotFound) {
						return // the other deleter won
					}
				}
				t.Errorf("round %d deleter %d: the network was not deleted within 30s", r, d)
			}()
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
		var rd int64
		delRev.Range(func(_, v any) bool {
			if rd != 0 {
				t.Errorf("round %d: the network was deleted twice", r)
			}
			rd = v.(int64)
			return true
		})
		if rd == 0 {
			t.Fatalf("round %d: no deleter removed the network", r)
		}
		for c, l := range lives {
			if l.live && !(l.created < rd && l.gone < rd) {
				t.Fatalf("round %d member %d lived over revisions [%d, %d), the network was deleted at %d", r, c, l.created, l.gone, rd)
			}
		}
		if kvs, _, err := s.Range(ctx, []byte(members), storage.PrefixEnd([]byte(members)), 0); err != nil || len(kvs) != 0 {
			t.Fatalf("round %d: members left after the network's delete: %s, %v", r, kvKeys(kvs), err)
		}
	}
}
