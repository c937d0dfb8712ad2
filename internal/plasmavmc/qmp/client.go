package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEventBuffer is the size of the Events() subscription's buffer.
const DefaultEventBuffer = 256

// Options tune a client. The zero value is usable.
type Options struct {
	// Logger receives the client's few log lines (a discarded late reply,
	// the connection ending). Nil discards them.
	Logger *slog.Logger
	// EventBuffer is the size of the buffer behind Events(); 0 means
	// DefaultEventBuffer.
	EventBuffer int
}

// Client is one QMP connection. Its methods are safe for concurrent use.
type Client struct {
	conn     net.Conn
	log      *slog.Logger
	greeting Greeting

	// writeSem serializes writes; a channel so a waiting writer can give up
	// when its context ends.
	writeSem chan struct{}
	nextID   atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan message
	subs    map[*Subscription]struct{}
	ended   bool
	err     error

	events *Subscription
	done   chan struct{}
	// readerDone is closed when the reader goroutine has returned.
	readerDone chan struct{}
	closeOnce  sync.Once
}

// Dial connects to QEMU's QMP Unix socket at path and completes the
// handshake (greeting, qmp_capabilities) within ctx.
func Dial(ctx context.Context, path string, opts Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	c, err := New(ctx, conn, opts)
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", path, err)
	}
	return c, nil
}

// New runs the handshake on an established connection and returns the
// client, which owns conn from then on (also when New fails: it is closed).
func New(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	buf := opts.EventBuffer
	if buf <= 0 {
		buf = DefaultEventBuffer
	}
	c := &Client{
		conn:       conn,
		log:        logger,
		writeSem:   make(chan struct{}, 1),
		pending:    make(map[uint64]chan message),
		subs:       make(map[*Subscription]struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	dec := newDecoder(bufio.NewReaderSize(conn, 64<<10))

	// The greeting is read here, before the reader starts, under ctx.
	stop := deadlineOnDone(ctx, conn.SetReadDeadline)
	m, err := dec.next()
	stop()
	_ = conn.SetReadDeadline(time.Time{})
	if err == nil && m.kind != kindGreeting {
		err = fmt.Errorf("%w: expected the greeting, got another message first", ErrProtocol)
	}
	if err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("qmp: waiting for the greeting: %w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("qmp: reading the greeting: %w", err)
	}
	c.greeting = m.greeting
	c.events = c.Subscribe(buf)

	go c.read(dec)

	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("qmp: negotiating capabilities: %w", err)
	}
	return c, nil
}

// Greeting is the greeting QEMU sent (its version and capabilities).
func (c *Client) Greeting() Greeting { return c.greeting }

// Execute runs cmd with args (marshalled as the "arguments" member; nil
// sends none) and decodes the "return" member into reply (nil ignores it).
// ctx bounds the whole command; on expiry Execute returns ctx's error and
// the reply, if QEMU still sends one, is discarded. An error reply from
// QEMU is an *Error.
func (c *Client) Execute(ctx context.Context, cmd string, args any, reply any) error {
	if cmd == "" {
		return errors.New("qmp: execute: empty command name")
	}
	id := c.nextID.Add(1)
	b, err := json.Marshal(request{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("qmp: %s: encoding arguments: %w", cmd, err)
	}
	b = append(b, '\n')

	ch := make(chan message, 1)
	c.mu.Lock()
	if c.ended {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	if err := c.write(ctx, b); err != nil {
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}

	var m message
	select {
	case m = <-ch:
	case <-ctx.Done():
		return fmt.Errorf("qmp: %s: %w", cmd, ctx.Err())
	case <-c.done:
		// The reply may have arrived just before the end.
		select {
		case m = <-ch:
		default:
			return fmt.Errorf("qmp: %s: %w", cmd, c.Err())
		}
	}
	if m.kind == kindError {
		e := *m.err
		e.Command = cmd
		return &e
	}
	if reply != nil {
		if err := json.Unmarshal(m.ret, reply); err != nil {
			return fmt.Errorf("qmp: %s: decoding the reply: %w", cmd, err)
		}
	}
	return nil
}

// write sends one request. A write that fails part-way leaves the stream
// corrupt, so it ends the connection; one that fails before sending
// anything (its context ended while waiting) does not.
func (c *Client) write(ctx context.Context, b []byte) error {
	select {
	case c.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
	defer func() { <-c.writeSem }()

	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
	} else {
		_ = c.conn.SetWriteDeadline(time.Time{})
	}
	stop := deadlineOnDone(ctx, c.conn.SetWriteDeadline)
	n, err := c.conn.Write(b)
	stop()
	if err == nil {
		return nil
	}
	if n > 0 {
		c.end(fmt.Errorf("%w: a write failed after %d of %d bytes: %w", ErrConnectionLost, n, len(b), err))
		return c.Err()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The socket's deadline (ctx's) can pass a moment before ctx
		// itself reports it; nothing was sent, the stream is intact.
		return context.DeadlineExceeded
	}
	c.end(fmt.Errorf("%w: write: %w", ErrConnectionLost, err))
	return c.Err()
}

// read is the one reader: it runs until the connection ends.
func (c *Client) read(dec *decoder) {
	defer close(c.readerDone)
	for {
		m, err := dec.next()
		if err != nil {
			switch {
			case errors.Is(err, ErrProtocol):
				c.end(err)
			case errors.Is(err, io.EOF):
				c.end(fmt.Errorf("%w: QEMU closed the connection", ErrConnectionLost))
			default:
				c.end(fmt.Errorf("%w: %w", ErrConnectionLost, err))
			}
			return
		}
		switch m.kind {
		case kindReturn, kindError:
			c.deliver(m)
		case kindEvent:
			c.publish(m.event)
		case kindGreeting:
			c.end(fmt.Errorf("%w: a second greeting", ErrProtocol))
			return
		}
	}
}

func (c *Client) deliver(m message) {
	c.mu.Lock()
	ch, ok := c.pending[m.id]
	if ok && m.hasID {
		delete(c.pending, m.id)
	}
	c.mu.Unlock()
	if !ok || !m.hasID {
		// A reply to a command that timed out, or one QEMU could not
		// attribute (it omits the id only for requests it could not parse).
		c.log.Debug("qmp reply matches no waiting command", "id", m.id, "has_id", m.hasID)
		return
	}
	ch <- m // buffered, and each id is delivered once
}

// end records why the connection ended (the first reason wins), closes it,
// closes every subscription and Done.
func (c *Client) end(err error) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.err = err
	for s := range c.subs {
		close(s.ch)
		delete(c.subs, s)
	}
	c.mu.Unlock()
	_ = c.conn.Close()
	close(c.done)
	if !errors.Is(err, ErrClosed) {
		c.log.Debug("qmp connection ended", "err", err)
	}
}

// Close ends the connection and waits for the reader to stop. Waiting
// commands fail with ErrClosed. Closing the connection does not affect
// QEMU, which keeps running and accepts the next client.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.end(ErrClosed)
	})
	<-c.readerDone
	return nil
}

// Done is closed when the connection has ended, for any reason.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up, and afterwards why it ended:
// ErrClosed, or an error wrapping ErrConnectionLost or ErrProtocol.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Events is the client's default subscription: every event, in a buffer of
// Options.EventBuffer that drops its oldest event when full. The channel
// is closed when the connection ends.
func (c *Client) Events() <-chan Event { return c.events.ch }

// DroppedEvents counts events dropped from Events() because it was full.
func (c *Client) DroppedEvents() uint64 { return c.events.Dropped() }

// Subscription is one subscriber's view of the events: its own bounded
// buffer, dropping its oldest event when full.
type Subscription struct {
	c       *Client
	ch      chan Event
	names   map[string]bool
	dropped atomic.Uint64
}

// Subscribe returns a new subscription with a buffer of size events (at
// least 1), receiving only the named events, or all when no name is given.
// Its channel is closed by Unsubscribe or when the connection ends.
func (c *Client) Subscribe(size int, names ...string) *Subscription {
	if size < 1 {
		size = 1
	}
	s := &Subscription{c: c, ch: make(chan Event, size)}
	if len(names) > 0 {
		s.names = make(map[string]bool, len(names))
		for _, n := range names {
			s.names[n] = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		close(s.ch)
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// C is the subscription's channel.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped counts the events this subscription dropped because its buffer
// was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Unsubscribe stops delivery and closes the channel. Idempotent.
func (s *Subscription) Unsubscribe() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[s]; ok {
		delete(c.subs, s)
		close(s.ch)
	}
}

// publish hands ev to every subscription without blocking. It holds c.mu,
// so no channel is closed while it sends; every send below is non-blocking.
func (c *Client) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		if s.names != nil && !s.names[ev.Name] {
			continue
		}
		select {
		case s.ch <- ev:
			continue
		default:
		}
		// Full: drop the oldest to make room. Only this goroutine sends,
		// and receivers only make room, so the second send succeeds.
		select {
		case <-s.ch:
			s.dropped.Add(1)
		default:
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// deadlineOnDone makes a blocked read or write return when ctx ends, by
// moving the connection's deadline into the past. The returned stop undoes
// the arrangement and, if it already fired, waits until it has finished, so
// a late firing cannot touch the deadline of the next operation.
func deadlineOnDone(ctx context.Context, set func(time.Time) error) (stop func()) {
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		_ = set(time.Unix(1, 0))
		close(fired)
	})
	return func() {
		if !cancel() {
			<-fired
		}
	}
}
