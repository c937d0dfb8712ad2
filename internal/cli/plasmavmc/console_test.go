package plasmavmc_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/ultracloud/ultracloud/internal/testkit"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// fakeConsoles serves the console endpoints by the contract in the
// package doc, in front of the real node (which serves everything else):
// vm web echoes what it gets after a notice and a banner; vm gone sends
// its banner and ends the session; vm busy refuses the upgrade with a
// problem. Every connection must carry the bearer token.
type fakeConsoles struct {
	t     *testing.T
	token string

	mu       sync.Mutex
	received []byte
	closed   *websocket.CloseError
	wg       sync.WaitGroup
}

const banner = "UltraCloud tiny guest\r\nlogin: "

func (f *fakeConsoles) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/demo/vms/")
		name, sub, _ := strings.Cut(rest, "/")
		if !ok || (sub != "console" && sub != "consolelog") {
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			problem(w, http.StatusUnauthorized, "unauthenticated", "no token")
			return
		}
		if sub == "consolelog" {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, "[    0.000000] Linux version 6.1.0\nBOOT-MARKER tiny\n")
			return
		}
		if name == "busy" {
			problem(w, http.StatusConflict, "conflict", "vm busy has no console yet: it is Pending")
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			f.t.Errorf("accepting the console: %v", err)
			return
		}
		f.wg.Add(1)
		defer f.wg.Done()
		defer c.CloseNow()
		ctx := r.Context()
		if name == "gone" {
			_ = c.Write(ctx, websocket.MessageBinary, []byte(banner))
			_ = c.Close(websocket.StatusNormalClosure, "the VM stopped")
			return
		}
		_ = c.Write(ctx, websocket.MessageText, []byte("attached (read-write)"))
		_ = c.Write(ctx, websocket.MessageBinary, []byte(banner))
		for {
			typ, b, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					f.mu.Lock()
					f.closed = &ce
					f.mu.Unlock()
				}
				return
			}
			if typ != websocket.MessageBinary {
				f.t.Errorf("the client sent a %v message; the contract has binary ones only", typ)
			}
			f.mu.Lock()
			f.received = append(f.received, b...)
			f.mu.Unlock()
			if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
				return
			}
		}
	})
}

func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	io.WriteString(w, `{"type":"about:blank","title":"`+http.StatusText(status)+`","status":`+strconv.Itoa(status)+`,"code":"`+code+`","detail":"`+detail+`"}`)
}

// session is one `ultracloud vm console` run with stdin a pipe the test
// types into.
type session struct {
	stdin          *io.PipeWriter
	stdout, stderr *syncBuffer
	done           chan int
}

func (e *env) console(args ...string) *session {
	pr, pw := io.Pipe()
	s := &session{stdin: pw, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan int, 1)}
	go func() {
		s.done <- e.RunIn(e.Env(pr, s.stdout, s.stderr), args...)
	}()
	// The stdin reader of a session ends at the end of stdin.
	e.T.Cleanup(func() { pw.Close() })
	return s
}

func (s *session) exit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("the console session did not end\nstdout: %q\nstderr: %q", s.stdout.String(), s.stderr.String())
	}
	return -1
}

// TestConsoleClient: `vm console` against a server that follows the
// contract: the banner and the echo of what is typed reach stdout, the
// notice stderr; Ctrl-] detaches (nothing typed after it is sent) with a
// normal close; a session the server ends says why; refusals before the
// upgrade are the server's problems; --log prints the scrollback.
func TestConsoleClient(t *testing.T) {
	e := newEnv(t)
	e.OK("image", "create", "tiny", "--format", "kernel")
	for _, n := range []string{"web", "gone", "busy"} {
		e.OK("vm", "create", n, "--image", "tiny", "--vcpus", "1", "--memory", "256Mi")
	}
	e.setStatus("web", func(st *plasmavmcv1.VMStatus) { st.Console = "/v1/projects/demo/vms/web/console" })

	fake := &fakeConsoles{t: t, token: e.n.Token()}
	target, err := url.Parse(e.n.APIURL())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fake.handler(httputil.NewSingleHostReverseProxy(target)))
	t.Cleanup(func() { fake.wg.Wait() })
	t.Cleanup(srv.Close)
	e.Vars["ULTRACLOUD_ENDPOINT"] = srv.URL

	s := e.console("vm", "console", "web")
	testkit.Eventually(t, 20*time.Second, "the banner on stdout", func() bool { return s.stdout.String() == banner })
	if _, err := io.WriteString(s.stdin, "root\n"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "the echo on stdout", func() bool { return s.stdout.String() == banner+"root\n" })
	if _, err := io.WriteString(s.stdin, "ls\x1dnot sent"); err != nil {
		t.Fatal(err)
	}
	if code := s.exit(t); code != 0 {
		t.Fatalf("vm console: exit %d\nstderr: %s", code, s.stderr.String())
	}
	fake.wg.Wait()
	fake.mu.Lock()
	got, closed := string(fake.received), fake.closed
	fake.mu.Unlock()
	if got != "root\nls" {
		t.Fatalf("the server received %q, want %q (nothing after Ctrl-])", got, "root\nls")
	}
	if closed == nil || closed.Code != websocket.StatusNormalClosure || closed.Reason != "detached" {
		t.Fatalf("the client closed with %+v, want 1000 detached", closed)
	}
	errs := s.stderr.String()
	for _, want := range []string{"Connected to vm/web's serial console; detach with Ctrl-]\n", "attached (read-write)\n", "Detached from vm/web\n"} {
		if !strings.Contains(errs, want) {
			t.Fatalf("stderr %q does not say %q", errs, want)
		}
	}

	// The server ends the session: the client says why and exits 0.
	s = e.console("vm", "console", "gone")
	if code := s.exit(t); code != 0 || s.stdout.String() != banner || !strings.Contains(s.stderr.String(), "The console closed: the VM stopped") {
		t.Fatalf("a session the server ended: exit %d\nstdout %q\nstderr %q", code, s.stdout.String(), s.stderr.String())
	}

	// Refusals are the server's problems, shown as every verb shows them.
	e.Fails([]string{"vm", "console", "busy"}, "vm/busy: console: vm busy has no console yet: it is Pending [conflict, HTTP 409]")
	e.Fails([]string{"vm", "console", "nosuch"}, "vm/nosuch:", "not_found", "HTTP 404")
	e.Vars["ULTRACLOUD_TOKEN"] = "wrong"
	e.Fails([]string{"vm", "console", "web", "--log"}, "HTTP 401")
	e.Vars["ULTRACLOUD_TOKEN"] = e.n.Token()

	if out := e.OK("vm", "console", "web", "--log"); out != "[    0.000000] Linux version 6.1.0\nBOOT-MARKER tiny\n" {
		t.Fatalf("vm console --log: %q", out)
	}
}
