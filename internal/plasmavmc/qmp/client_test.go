package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ultracloud/ultracloud/internal/testkit"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}` + "\r\n"

// socketpair returns two connected stream sockets, as a Unix socket to QEMU
// would be (kernel buffering, half-written messages possible).
func socketpair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	client, server = conn(fds[0], "client"), conn(fds[1], "server")
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// fakeQEMU is the server side of a socketpair, scripted by the test.
type fakeQEMU struct {
	t    *testing.T
	conn net.Conn
	in   *bufio.Reader
	mu   sync.Mutex // serializes writes
}

type wireRequest struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// next reads one request; ok is false when the client went away.
func (f *fakeQEMU) next() (wireRequest, bool) {
	line, err := f.in.ReadBytes('\n')
	if err != nil {
		return wireRequest{}, false
	}
	var r wireRequest
	if err := json.Unmarshal(line, &r); err != nil {
		f.t.Errorf("fake qemu: bad request %q: %v", line, err)
		return wireRequest{}, false
	}
	return r, true
}

func (f *fakeQEMU) send(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, _ = f.conn.Write([]byte(s))
}

func (f *fakeQEMU) reply(r wireRequest, ret string) {
	f.send(fmt.Sprintf(`{"return": %s, "id": %s}`+"\r\n", ret, r.ID))
}

func (f *fakeQEMU) event(name string, n int) {
	f.send(fmt.Sprintf(`{"timestamp": {"seconds": 1700000000, "microseconds": %d}, "event": %q, "data": {"n": %d}}`+"\r\n", n, name, n))
}

// start returns a client connected to a fake QEMU that has answered the
// handshake; the test then scripts the rest with the returned fake.
func start(t *testing.T, opts Options) (*Client, *fakeQEMU) {
	t.Helper()
	cc, sc := socketpair(t)
	f := &fakeQEMU{t: t, conn: sc, in: bufio.NewReader(sc)}
	hs := make(chan struct{})
	go func() {
		defer close(hs)
		f.send(greeting)
		r, ok := f.next()
		if !ok || r.Execute != "qmp_capabilities" {
			t.Errorf("fake qemu: first command %q, want qmp_capabilities", r.Execute)
			return
		}
		f.reply(r, "{}")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := New(ctx, cc, opts)
	<-hs
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, f
}

// serve runs fn in a goroutine the test waits for at cleanup.
func serve(t *testing.T, fn func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); fn() }()
	t.Cleanup(wg.Wait)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestHandshakeReadsTheGreetingAndNegotiates(t *testing.T) {
	c, _ := start(t, Options{})
	if got := c.Greeting().String(); got != "7.2.0" {
		t.Fatalf("greeting version %q, want 7.2.0", got)
	}
	if c.Greeting().Version.Package != "fake" || len(c.Greeting().Capabilities) != 1 {
		t.Fatalf("greeting %+v", c.Greeting())
	}
	if c.Err() != nil {
		t.Fatalf("Err() = %v on a live connection", c.Err())
	}
}

func TestHandshakeFailsOnSomethingThatIsNotAGreeting(t *testing.T) {
	cc, sc := socketpair(t)
	serve(t, func() { _, _ = sc.Write([]byte(`{"return": {}, "id": 1}` + "\r\n")) })
	_, err := New(ctxFor(t, 5*time.Second), cc, Options{})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrProtocol", err)
	}
}

func TestHandshakeGivesUpWhenNoGreetingComes(t *testing.T) {
	cc, _ := socketpair(t)
	start := time.Now()
	_, err := New(ctxFor(t, 100*time.Millisecond), cc, Options{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("gave up after %v; the context allowed 100ms", d)
	}
}

func TestRefusedCapabilitiesFailTheHandshake(t *testing.T) {
	cc, sc := socketpair(t)
	f := &fakeQEMU{t: t, conn: sc, in: bufio.NewReader(sc)}
	serve(t, func() {
		f.send(greeting)
		if r, ok := f.next(); ok {
			f.send(fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "no"}, "id": %s}`+"\r\n", r.ID))
		}
	})
	_, err := New(ctxFor(t, 5*time.Second), cc, Options{})
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "GenericError" {
		t.Fatalf("err = %v, want the GenericError reply", err)
	}
}

func TestRepliesAreMatchedByIDWhenTheyArriveInAnotherOrder(t *testing.T) {
	c, f := start(t, Options{})
	const n = 8
	serve(t, func() {
		var reqs []wireRequest
		for range n {
			r, ok := f.next()
			if !ok {
				return
			}
			reqs = append(reqs, r)
		}
		// Answer in reverse order, each echoing its own command name.
		for i := len(reqs) - 1; i >= 0; i-- {
			f.reply(reqs[i], fmt.Sprintf(`{"cmd": %q, "args": %s}`, reqs[i].Execute, reqs[i].Arguments))
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got struct {
				Cmd  string `json:"cmd"`
				Args struct {
					I int `json:"i"`
				} `json:"args"`
			}
			cmd := fmt.Sprintf("cmd-%d", i)
			if err := c.Execute(ctxFor(t, 5*time.Second), cmd, map[string]int{"i": i}, &got); err != nil {
				errs <- err
				return
			}
			if got.Cmd != cmd || got.Args.I != i {
				errs <- fmt.Errorf("%s got the reply of %s (i=%d)", cmd, got.Cmd, got.Args.I)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestEventsInterleavedWithRepliesArriveOnTheirOwnChannel(t *testing.T) {
	c, f := start(t, Options{})
	serve(t, func() {
		r, ok := f.next()
		if !ok {
			return
		}
		f.event("STOP", 1)
		// A reply split around an event would be invalid JSON; an event
		// between two writes of whole messages is what QEMU does.
		f.event("RESUME", 2)
		f.reply(r, `{"status": "running"}`)
		f.event("SHUTDOWN", 3)
	})
	var st struct {
		Status string `json:"status"`
	}
	if err := c.Execute(ctxFor(t, 5*time.Second), "query-status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Status != "running" {
		t.Fatalf("status %q", st.Status)
	}
	for i, want := range []string{"STOP", "RESUME", "SHUTDOWN"} {
		select {
		case ev := <-c.Events():
			if ev.Name != want {
				t.Fatalf("event %d is %s, want %s", i, ev.Name, want)
			}
			var d struct{ N int }
			if err := json.Unmarshal(ev.Data, &d); err != nil || d.N != i+1 {
				t.Fatalf("event %s data %s", ev.Name, ev.Data)
			}
			if want := time.Unix(1700000000, int64(i+1)*1000); !ev.Time.Equal(want) {
				t.Fatalf("event %s time %v, want %v", ev.Name, ev.Time, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %s did not arrive", want)
		}
	}
}

func TestASlowEventReaderNeverBlocksRepliesAndLosesTheOldestEvents(t *testing.T) {
	c, f := start(t, Options{EventBuffer: 16})
	shutdowns := c.Subscribe(4, "SHUTDOWN")
	const flood = 5000
	serve(t, func() {
		r, ok := f.next()
		if !ok {
			return
		}
		for i := 1; i <= flood; i++ {
			f.event("RTC_CHANGE", i)
		}
		f.event("SHUTDOWN", flood+1)
		f.reply(r, "{}")
	})
	// Nobody reads Events() while the flood arrives.
	if err := c.Execute(ctxFor(t, 10*time.Second), "query-status", nil, nil); err != nil {
		t.Fatalf("the reply was held up by unread events: %v", err)
	}
	if d := c.DroppedEvents(); d != flood+1-16 {
		t.Fatalf("dropped %d events from Events(), want %d", d, flood+1-16)
	}
	// What is left is the newest 16, in order.
	for want := flood + 1 - 15; want <= flood+1; want++ {
		ev := <-c.Events()
		var d struct{ N int }
		_ = json.Unmarshal(ev.Data, &d)
		if d.N != want {
			t.Fatalf("buffered event n=%d, want %d (drop-oldest keeps the newest)", d.N, want)
		}
	}
	// The filtered subscription was not crowded out by the flood.
	select {
	case ev := <-shutdowns.C():
		if ev.Name != "SHUTDOWN" {
			t.Fatalf("filtered subscription got %s", ev.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the SHUTDOWN subscription got nothing")
	}
	if shutdowns.Dropped() != 0 {
		t.Fatalf("the SHUTDOWN subscription dropped %d", shutdowns.Dropped())
	}
}

func TestAHungCommandHitsItsTimeoutAndItsLateReplyIsDiscarded(t *testing.T) {
	c, f := start(t, Options{})
	second := make(chan struct{})
	serve(t, func() {
		hung, ok := f.next()
		if !ok {
			return
		}
		next, ok := f.next()
		if !ok {
			return
		}
		<-second
		// The late reply to the first, then the second's own.
		f.reply(hung, `{"who": "hung"}`)
		f.reply(next, `{"who": "next"}`)
	})
	start := time.Now()
	err := c.Execute(ctxFor(t, 100*time.Millisecond), "hang", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the timeout took %v", d)
	}
	done := make(chan error, 1)
	var got struct{ Who string }
	go func() { done <- c.Execute(ctxFor(t, 5*time.Second), "next", nil, &got) }()
	testkit.Eventually(t, 5*time.Second, "the second command in flight", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1
	})
	close(second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got.Who != "next" {
		t.Fatalf("the second command got the reply of %q", got.Who)
	}
	if c.Err() != nil {
		t.Fatalf("the connection ended: %v", c.Err())
	}
}

func TestAServerDyingMidReplyFailsTheCommandAndEndsTheConnection(t *testing.T) {
	c, f := start(t, Options{})
	serve(t, func() {
		if _, ok := f.next(); !ok {
			return
		}
		f.send(`{"return": {"status": "runn`)
		f.conn.Close()
	})
	err := c.Execute(ctxFor(t, 5*time.Second), "query-status", nil, nil)
	if !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("err = %v, want ErrConnectionLost", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(c.Err(), ErrConnectionLost) {
		t.Fatalf("Err() = %v", c.Err())
	}
	if _, ok := <-c.Events(); ok {
		t.Fatal("Events() delivered after the end")
	}
	if err := c.Execute(ctxFor(t, time.Second), "query-status", nil, nil); !errors.Is(err, ErrConnectionLost) {
		t.Fatalf("a command after the end: %v", err)
	}
}

func TestQEMUErrorsAreTyped(t *testing.T) {
	c, f := start(t, Options{})
	serve(t, func() {
		if r, ok := f.next(); ok {
			f.send(fmt.Sprintf(`{"id": %s, "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`+"\r\n", r.ID))
		}
	})
	err := c.Execute(ctxFor(t, 5*time.Second), "block_resize", map[string]any{"device": "x", "size": 1}, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	if qe.Class != "DeviceNotFound" || qe.Desc != "Device 'x' not found" || qe.Command != "block_resize" {
		t.Fatalf("error %+v", qe)
	}
	if !strings.Contains(err.Error(), "block_resize") {
		t.Fatalf("message %q does not name the command", err)
	}
}

func TestAReplyOfManyMegabytesIsReadWhole(t *testing.T) {
	c, f := start(t, Options{})
	big := strings.Repeat("x", 12<<20)
	serve(t, func() {
		if r, ok := f.next(); ok {
			f.reply(r, fmt.Sprintf(`{"blob": %q}`, big))
		}
	})
	var got struct{ Blob string }
	if err := c.Execute(ctxFor(t, 30*time.Second), "query-qmp-schema", nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Blob) != len(big) {
		t.Fatalf("reply of %d bytes, want %d", len(got.Blob), len(big))
	}
}

func TestArgumentsAreSentAndOmittedWhenNil(t *testing.T) {
	c, f := start(t, Options{})
	reqs := make(chan wireRequest, 2)
	serve(t, func() {
		for range 2 {
			r, ok := f.next()
			if !ok {
				return
			}
			reqs <- r
			f.reply(r, "{}")
		}
	})
	if err := c.Execute(ctxFor(t, 5*time.Second), "a", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Execute(ctxFor(t, 5*time.Second), "b", map[string]any{"device": "d", "size": 1 << 30}, nil); err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.Arguments != nil {
		t.Fatalf("nil arguments sent as %s", r.Arguments)
	}
	if r := <-reqs; string(r.Arguments) != `{"device":"d","size":1073741824}` {
		t.Fatalf("arguments %s", r.Arguments)
	}
}

func TestCloseFailsWaitingCommandsAndIsIdempotent(t *testing.T) {
	c, f := start(t, Options{})
	serve(t, func() { f.next() })
	errc := make(chan error, 1)
	go func() { errc <- c.Execute(ctxFor(t, 10*time.Second), "hang", nil, nil) }()
	testkit.Eventually(t, 5*time.Second, "the command in flight", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 1
	})
	c.Close()
	c.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting command: %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
	if s := c.Subscribe(1); s != nil {
		if _, ok := <-s.C(); ok {
			t.Fatal("a subscription after the end is open")
		}
	}
}

func TestUnsubscribeClosesOnlyThatSubscription(t *testing.T) {
	c, f := start(t, Options{})
	a, b := c.Subscribe(4), c.Subscribe(4)
	a.Unsubscribe()
	a.Unsubscribe()
	if _, ok := <-a.C(); ok {
		t.Fatal("unsubscribed channel still open")
	}
	f.event("RESET", 1)
	select {
	case ev := <-b.C():
		if ev.Name != "RESET" {
			t.Fatalf("got %s", ev.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the other subscription got nothing")
	}
}

func TestGarbageFromTheServerIsAProtocolError(t *testing.T) {
	c, f := start(t, Options{})
	f.send("{\"return\": {}, \"event\": \"X\"}\r\n")
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a message that is both a reply and an event did not end the connection")
	}
	if !errors.Is(c.Err(), ErrProtocol) {
		t.Fatalf("Err() = %v, want ErrProtocol", c.Err())
	}
}
