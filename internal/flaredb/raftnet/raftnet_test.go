package raftnet

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

func listen(t *testing.T, cluster, id string) *Layer {
	t.Helper()
	l, err := New(testkit.Listen(t), nil, cluster, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestHandshake(t *testing.T) {
	server := listen(t, "c1", "a")
	friend := listen(t, "c1", "b")
	stranger := listen(t, "c2", "x")

	// Same cluster: the connection carries bytes both ways.
	done := make(chan error, 1)
	go func() {
		c, err := server.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- err
			return
		}
		_, err = c.Write(buf)
		done <- err
	}()
	c, err := friend.Dial(raftAddr(server), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo = %q %v", buf, err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Another cluster: refused on both sides with a clear error.
	if _, err := stranger.Dial(raftAddr(server), time.Second); !errors.Is(err, ErrWrongCluster) {
		t.Fatalf("dial from another cluster: %v", err)
	}
	// The server counts the refusal after answering it: wait for it.
	for deadline := time.Now().Add(5 * time.Second); server.Refused() != 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if server.Refused() != 1 {
		t.Fatalf("refused = %d", server.Refused())
	}

	// Not our protocol at all (e.g. an HTTP client) is refused too.
	raw, err := net.Dial("tcp", server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, _ := io.ReadAll(raw)
	if len(reply) == 0 || reply[0] != statusBad {
		t.Fatalf("reply to garbage = %q", reply)
	}
}

func TestCloseWithPendingHandshake(t *testing.T) {
	l := listen(t, "c1", "a")
	// A client that connects and never speaks holds a handshake goroutine.
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(20 * time.Millisecond)
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a silent client")
	}
	if _, err := l.Accept(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

func raftAddr(l *Layer) raft.ServerAddress { return raft.ServerAddress(l.Addr().String()) }
