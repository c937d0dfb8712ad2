package flaredb

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/flaredb/wire"
	"github.com/ultracloud/ultracloud/internal/testkit"
)

// TestReadIndexPeerErrorIsRetryable: a follower asking the leader for a
// read index, where the leader takes the request and dies before
// answering, reports the leader unavailable (clients try again), not
// "write outcome unknown"; one it cannot reach at all still says so.
func TestReadIndexPeerErrorIsRetryable(t *testing.T) {
	ln := testkit.Listen(t)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// Read the request's first line, then hang up.
			_, _ = bufio.NewReader(conn).ReadString('\n')
			conn.Close()
		}
	}()
	hc := newPeerClient(2 * time.Second)
	ask := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+pathReadIndex, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatal("a leader that hangs up answered")
		}
		return readIndexPeerError(peerError(addr, err))
	}

	var we *wire.Error
	if err := ask(ln.Addr().String()); !errors.As(err, &we) || we.Code != wire.CodeUnavailable || !wire.RetryableRead(we.Code) {
		t.Fatalf("leader hung up: %v, want unavailable", err)
	}
	deadAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	if err := ask(deadAddr); !errors.As(err, &we) || we.Code != wire.CodeNoLeader {
		t.Fatalf("leader unreachable: %v, want no leader", err)
	}
}
