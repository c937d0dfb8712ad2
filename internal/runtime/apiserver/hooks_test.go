package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/internal/runtime/storage/pebblestore"
	"github.com/ultracloud/ultracloud/pkg/api"
)

// A seat is allocated from a pool of seatPool numbers when it is created
// (an IPAM in miniature): the hook picks a free number at random from what
// it reads, and a Retry precondition catches a number taken meanwhile.
const seatPool = 40

type seatSpec struct {
	// Want asks for a number on update (0: keep).
	Want int `json:"want,omitempty"`
}

type seatStatus struct {
	Number int  `json:"number"` // server-owned
	Ready  bool `json:"ready,omitempty"`
}

func seatKey(n int) []byte { return []byte("/seats/" + strconv.Itoa(n)) }

var errSeatsFull = apiserver.Errorf(http.StatusConflict, "pool_exhausted", "no seat left")

func newSeatEnv(t *testing.T) (*authzEnv, storage.Store) {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := apiserver.New(st, apiserver.Options{Authenticator: fakeAuthn{}, Authorizer: fakeAuthz{}})
	taken := func(ctx context.Context) (map[int]bool, error) {
		kvs, _, err := st.Range(ctx, []byte("/seats/"), []byte("/seats0"), 0)
		out := map[int]bool{}
		for _, kv := range kvs {
			n, _ := strconv.Atoi(string(kv.Key[len("/seats/"):]))
			out[n] = true
		}
		return out, err
	}
	claim := func(n int, owner string) (storage.Op, apiserver.Precondition) {
		return storage.Op{Type: storage.OpPut, Key: seatKey(n), Value: []byte(owner)},
			apiserver.Precondition{Compare: storage.Compare{Key: seatKey(n), Target: storage.CompareMissing}, Retry: true,
				Err: apiserver.Errorf(http.StatusConflict, api.CodeConflict, "seat %d is taken", n)}
	}
	err = apiserver.Register(a, "test", apiserver.KindDef[seatSpec, seatStatus]{
		Kind: "Seat", Collection: "seats", Singular: "seat", Scope: api.ScopeCluster,
		OnCreate: func(ctx context.Context, c *apiserver.Creation[seatSpec, seatStatus]) error {
			used, err := taken(ctx)
			if err != nil {
				return err
			}
			var free []int
			for n := 1; n <= seatPool; n++ {
				if !used[n] {
					free = append(free, n)
				}
			}
			if len(free) == 0 {
				return errSeatsFull
			}
			c.Status.Number = free[rand.IntN(len(free))]
			op, pre := claim(c.Status.Number, c.Name)
			c.Ops, c.Require = append(c.Ops, op), append(c.Require, pre)
			return nil
		},
		OnUpdate: func(_ context.Context, u *apiserver.Update[seatSpec, seatStatus]) error {
			op, pre := claim(u.New.Want, u.Object.Metadata.Name)
			pre.Retry = false
			u.Ops = append(u.Ops, op, storage.Op{Type: storage.OpDelete, Key: seatKey(u.Status.Number)})
			u.Require = append(u.Require, pre)
			return nil
		},
		OnStatusUpdate: func(old, new *seatStatus) error {
			new.Number = old.Number // server-owned: a status writer cannot change it
			return nil
		},
		OnDelete: func(_ context.Context, d *apiserver.Deletion[seatSpec, seatStatus]) error {
			d.Ops = append(d.Ops, storage.Op{Type: storage.OpDelete, Key: seatKey(d.Status.Number)})
			d.Require = append(d.Require, apiserver.Precondition{
				Compare: storage.Compare{Key: []byte("/pins/" + d.Object.Metadata.Name), Target: storage.CompareMissing},
				Err:     apiserver.Errorf(http.StatusConflict, api.CodeConflict, "seat %s is pinned", d.Object.Metadata.Name)})
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Mount(mux)
	e := &authzEnv{st: st, srv: httptest.NewServer(mux)}
	t.Cleanup(func() {
		e.srv.Close()
		st.Close()
	})
	return e, st
}

// TestRetryablePreconditionAllocatesEachNumberOnce: concurrent creates
// that pick from the same free list all succeed with distinct numbers
// (a lost race reruns the hook), and a full pool is the hook's error.
func TestRetryablePreconditionAllocatesEachNumberOnce(t *testing.T) {
	e, _ := newSeatEnv(t)
	var wg sync.WaitGroup
	nums := make([]int, seatPool)
	for i := range seatPool {
		wg.Go(func() {
			var o struct{ Status seatStatus }
			body := e.req(t, "POST", "/v1/seats", "super", fmt.Sprintf(`{"metadata":{"name":"s%d"},"spec":{}}`, i), 201)
			if err := json.Unmarshal([]byte(body), &o); err != nil {
				t.Error(err)
			}
			nums[i] = o.Status.Number
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, n := range nums {
		if n < 1 || n > seatPool || seen[n] {
			t.Fatalf("seat s%d got number %d (all: %v)", i, n, nums)
		}
		seen[n] = true
	}
	body := e.req(t, "POST", "/v1/seats", "super", `{"metadata":{"name":"late"},"spec":{}}`, 409)
	if !json.Valid([]byte(body)) || !strings.Contains(body, "pool_exhausted") {
		t.Fatalf("full pool: %s", body)
	}
	e.req(t, "GET", "/v1/seats/late", "super", "", 404)
}

// TestUpdateStatusAndDeleteHooks: OnUpdate's ops and preconditions commit
// with the update or block it; OnStatusUpdate keeps server-owned fields;
// a failed delete precondition deletes nothing.
func TestUpdateStatusAndDeleteHooks(t *testing.T) {
	e, st := newSeatEnv(t)
	ctx := context.Background()
	get := func(name string) seatStatus {
		var o struct{ Status seatStatus }
		if err := json.Unmarshal([]byte(e.req(t, "GET", "/v1/seats/"+name, "super", "", 200)), &o); err != nil {
			t.Fatal(err)
		}
		return o.Status
	}
	e.req(t, "POST", "/v1/seats", "super", `{"metadata":{"name":"a"},"spec":{}}`, 201)
	e.req(t, "POST", "/v1/seats", "super", `{"metadata":{"name":"b"},"spec":{}}`, 201)
	a, b := get("a").Number, get("b").Number
	// Asking for b's number fails and changes nothing.
	e.req(t, "PUT", "/v1/seats/a", "super", fmt.Sprintf(`{"metadata":{"name":"a"},"spec":{"want":%d}}`, b), 409)
	if kv, err := st.Get(ctx, seatKey(a)); err != nil || string(kv.Value) != "a" {
		t.Fatalf("a's seat after a refused update: %v %v", kv, err)
	}
	// A status write cannot move the number.
	e.req(t, "PUT", "/v1/seats/a/status", "super", `{"status":{"number":999,"ready":true}}`, 200)
	if s := get("a"); s.Number != a || !s.Ready {
		t.Fatalf("status after write: %+v, want number %d kept and ready", s, a)
	}
	// A pinned seat cannot be deleted; unpinned it can, releasing its number.
	if _, err := st.Txn(ctx, storage.Txn{Then: []storage.Op{{Type: storage.OpPut, Key: []byte("/pins/a"), Value: []byte("x")}}}); err != nil {
		t.Fatal(err)
	}
	e.req(t, "DELETE", "/v1/seats/a", "super", "", 409)
	get("a")
	if _, err := st.Txn(ctx, storage.Txn{Then: []storage.Op{{Type: storage.OpDelete, Key: []byte("/pins/a")}}}); err != nil {
		t.Fatal(err)
	}
	e.req(t, "DELETE", "/v1/seats/a", "super", "", 200)
	if _, err := st.Get(ctx, seatKey(a)); err == nil {
		t.Fatal("deleting a did not release its number")
	}
}
