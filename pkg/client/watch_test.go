package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// TestWatchResumeMidRevision: a stream breaks after delivering part of a
// revision (one transaction touching several objects). The resume must ask
// for that revision again and deliver only the objects not yet seen.
func TestWatchResumeMidRevision(t *testing.T) {
	ev := func(rev int64, name string) api.Event {
		return api.Event{Type: api.EventAdded, Revision: rev, Object: &api.Object{Kind: "W", Metadata: api.ObjectMeta{Name: name}}}
	}
	var mu sync.Mutex
	var sinces []string
	streams := [][]api.Event{
		{{Type: api.EventBookmark, Revision: 4}, ev(5, "a"), ev(5, "b")}, // then the connection drops
		{ev(5, "a"), ev(5, "b"), ev(5, "c"), ev(6, "d"), {Type: api.EventBookmark, Revision: 5}},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(sinces)
		sinces = append(sinces, r.URL.Query().Get("since"))
		mu.Unlock()
		if n >= len(streams) {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, e := range streams[n] {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "%s\n", b)
		}
		w.(http.Flusher).Flush()
		if n == len(streams)-1 {
			<-r.Context().Done() // keep the last stream open
		}
	}))
	defer srv.Close()
	c, err := New(Config{Endpoint: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Resources("ws", "p").Watch(ctx, WatchOptions{MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var got []string
	for len(got) < 4 {
		select {
		case e := <-w.Events():
			if e.Type != api.EventBookmark {
				got = append(got, fmt.Sprintf("%d%s", e.Revision, e.Object.Metadata.Name))
			}
		case <-ctx.Done():
			t.Fatalf("timeout; got %v", got)
		}
	}
	if fmt.Sprint(got) != "[5a 5b 5c 6d]" {
		t.Fatalf("delivered %v, want [5a 5b 5c 6d]", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if sinces[0] != "" || sinces[1] != "4" {
		t.Fatalf("since parameters %q, want first none then 4", sinces)
	}
}

// TestWatchServerError ends the watch with the server's problem.
func TestWatchServerError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		b, _ := json.Marshal(api.Event{Type: api.EventError, Error: &api.Problem{Status: 410, Code: api.CodeRevisionCompacted, Title: "Gone"}})
		fmt.Fprintf(w, "%s\n", b)
	}))
	defer srv.Close()
	c, _ := New(Config{Endpoint: srv.URL})
	since := int64(3)
	w, err := c.Resources("ws", "").Watch(context.Background(), WatchOptions{Since: &since})
	if err != nil {
		t.Fatal(err)
	}
	for range w.Events() {
	}
	if !IsCompacted(w.Err()) {
		t.Fatalf("Err() = %v, want revision_compacted", w.Err())
	}
}
