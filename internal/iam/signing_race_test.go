package iam_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/iam"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
)

// rotateBetweenReads runs hook once, just before the second read of a key
// load (whichever of Get and Range comes second): what another node does
// when it happens to rotate between this node's two reads.
type rotateBetweenReads struct {
	storage.Store
	reads atomic.Int32
	once  sync.Once
	hook  func()
}

func (s *rotateBetweenReads) before() {
	if s.reads.Add(1) == 2 {
		s.once.Do(s.hook)
	}
}

func (s *rotateBetweenReads) Get(ctx context.Context, key []byte) (storage.KV, error) {
	s.before()
	return s.Store.Get(ctx, key)
}

func (s *rotateBetweenReads) Range(ctx context.Context, start, end []byte, limit int) ([]storage.KV, int64, error) {
	s.before()
	return s.Store.Range(ctx, start, end, limit)
}

// Several nodes running iam start together on one flaredb cluster; one of
// them once failed with "the active signing key <kid> is missing": it read
// the keys, another node created the first key and pointed at it, then it
// read the pointer. A key load must be consistent whatever another node
// does between its reads.
func TestKeyLoadWhileAnotherNodeRotates(t *testing.T) {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	sealer, err := iam.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	ctx := t.Context()
	other := iam.NewKeyManager(st, sealer, log, time.Now, time.Hour, time.Hour)
	wrapped := &rotateBetweenReads{Store: st, hook: func() {
		if err := other.EnsureCurrent(ctx); err != nil {
			t.Errorf("the other node's rotation: %v", err)
		}
	}}
	me := iam.NewKeyManager(wrapped, sealer, log, time.Now, time.Hour, time.Hour)
	if err := me.EnsureCurrent(ctx); err != nil {
		t.Fatalf("a node whose key load races with another node's first rotation: %v", err)
	}
	if wrapped.reads.Load() < 2 {
		t.Fatalf("the load made %d reads; the test needs the hook between two", wrapped.reads.Load())
	}
}
