package plasmavmc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ultracloud/ultracloud/internal/cli/clikit"
	"github.com/ultracloud/ultracloud/pkg/api/plasmavmcv1"
)

// detachKey is Ctrl-] (as telnet and virsh console use it).
const detachKey = 0x1d

// Paths of a VM's console endpoints, relative to the VM (see the package
// doc for the contract).
const (
	consolePath    = "console"
	consoleLogPath = "consolelog"
)

func newConsoleCmd(cf *clikit.ClientFlags) *cobra.Command {
	var logOnly bool
	cmd := &cobra.Command{
		Use:   "console NAME [--log]",
		Short: "Attach to a VM's serial console (detach with Ctrl-]), or print its scrollback with --log",
		Long: `Attach the terminal to the VM's serial console: what the guest prints appears
here and what you type goes to it, with the terminal in raw mode until you
detach with Ctrl-] (the VM keeps running). With --log, print the console's
recent output (the scrollback the worker keeps) and exit.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := cf.Connect()
			if err != nil {
				return err
			}
			v, err := clikit.Get[plasmavmcv1.VMSpec, plasmavmcv1.VMStatus](ctx, c, vms, args[0])
			if err != nil {
				return err
			}
			r, err := openRaw(cf)
			if err != nil {
				return err
			}
			defer r.close()
			project := v.Raw.Metadata.Project
			if project == "" {
				project = c.Config.Project
			}
			env := cf.Env()
			if logOnly {
				return consoleLog(ctx, r, project, args[0], cmd.OutOrStdout())
			}
			u, err := consoleURL(r, project, args[0], v.Status.Console)
			if err != nil {
				return err
			}
			return attach(ctx, r, u, vms.Ref(args[0]), env)
		},
	}
	cmd.Flags().BoolVar(&logOnly, "log", false, "print the console's recent output and exit")
	return cmd
}

// consoleLog copies the scrollback to w.
func consoleLog(ctx context.Context, r *rawConn, project, name string, w io.Writer) error {
	u := r.url(objectPath(project, vms, name, consoleLogPath), nil)
	resp, err := r.do(ctx, func() (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err == nil {
			req.Header.Set("Accept", "text/plain")
		}
		return req, err
	})
	if err != nil {
		return fmt.Errorf("%s: console log: %w", vms.Ref(name), err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("%s: reading the console log: %w", vms.Ref(name), err)
	}
	return nil
}

// consoleURL is the WebSocket URL of the console: status.console when the
// server gave one (a path below the endpoint, or a full URL), else the
// default path.
func consoleURL(r *rawConn, project, name, fromStatus string) (string, error) {
	if fromStatus == "" {
		return r.url(objectPath(project, vms, name, consolePath), nil), nil
	}
	if strings.HasPrefix(fromStatus, "/") {
		p, q, _ := strings.Cut(fromStatus, "?")
		vals, err := url.ParseQuery(q)
		if err != nil {
			return "", fmt.Errorf("%s: status.console %q: %w", vms.Ref(name), fromStatus, err)
		}
		return r.url(p, vals), nil
	}
	u, err := url.Parse(fromStatus)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s: status.console %q is neither a path nor a URL", vms.Ref(name), fromStatus)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return "", fmt.Errorf("%s: status.console %q: want a ws(s) or http(s) URL", vms.Ref(name), fromStatus)
	}
	return u.String(), nil
}

// dial opens the console's WebSocket, retrying once with a fresh token
// after a 401 as every other request does.
func dial(ctx context.Context, r *rawConn, u string) (*websocket.Conn, error) {
	for attempt := 0; ; attempt++ {
		auth, err := r.authHeader(ctx)
		if err != nil {
			return nil, err
		}
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: r.hc, HTTPHeader: h})
		if err == nil {
			return conn, nil
		}
		if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && r.invalidate(auth) {
			continue
		}
		if resp.Body == nil {
			resp.Body = io.NopCloser(bytes.NewReader(nil))
		}
		return nil, problemOf(resp)
	}
}

// attach runs an interactive session: the server's bytes to stdout, its
// notices to stderr, stdin's bytes to the server until Ctrl-] or the end
// of stdin. A terminal is put in raw mode (so keys reach the guest as
// typed, Ctrl-C included) and restored however the session ends.
func attach(ctx context.Context, r *rawConn, u, ref string, env clikit.Env) error {
	conn, err := dial(ctx, r, u)
	if err != nil {
		return fmt.Errorf("%s: console: %w", ref, err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)

	nl := "\n"
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		old, err := term.MakeRaw(int(f.Fd()))
		if err != nil {
			return fmt.Errorf("%s: console: putting the terminal in raw mode: %w", ref, err)
		}
		defer term.Restore(int(f.Fd()), old)
		nl = "\r\n" // raw mode: no newline translation
	}
	fmt.Fprintf(env.Stderr, "Connected to %s's serial console; detach with Ctrl-]%s", ref, nl)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The reader ends when the server closes, the connection breaks, or
	// ctx ends (a detach); attach waits for it before it returns.
	var wg sync.WaitGroup
	var readErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		readErr = pump(ctx, conn, env.Stdout, env.Stderr, nl)
	}()

	why := sendInput(ctx, conn, env.Stdin)
	// The close handshake first, while the reader still reads (it takes
	// the server's answer); then nothing is left to wait for.
	_ = conn.Close(websocket.StatusNormalClosure, "detached")
	cancel()
	wg.Wait()
	switch {
	case errors.Is(why, errDetached) || errors.Is(why, io.EOF):
		fmt.Fprintf(env.Stderr, "%sDetached from %s%s", nl, ref, nl)
		return nil
	case readErr != nil:
		return fmt.Errorf("%s: console: %w", ref, readErr)
	case errors.Is(why, context.Canceled):
		// The server ended the session (pump said why), or the command
		// was cancelled.
		return nil
	case why != nil:
		return fmt.Errorf("%s: console: %w", ref, why)
	}
	return nil
}

var errDetached = errors.New("plasmavmc: detached")

// stdinChunk is one read of stdin, handed from the reading goroutine.
type stdinChunk struct {
	b   []byte
	err error
}

// sendInput sends what stdin gives, one message per read, until Ctrl-]
// (errDetached), the end of stdin (io.EOF) or ctx ends. Stdin is read by
// a goroutine of its own because a blocking read from a terminal cannot be
// interrupted: it is the one goroutine not waited for. It hands over
// nothing once ctx ends and stops at its next read (the next key press,
// the end of stdin, or the process exiting, which follows the session:
// `vm console` is the last thing the command does).
func sendInput(ctx context.Context, conn *websocket.Conn, stdin io.Reader) error {
	chunks := make(chan stdinChunk)
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := stdin.Read(buf)
			select {
			case chunks <- stdinChunk{buf[:n], err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var ch stdinChunk
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ch = <-chunks:
		}
		b := ch.b
		detach := false
		if i := bytes.IndexByte(b, detachKey); i >= 0 {
			b, detach = b[:i], true
		}
		if len(b) > 0 {
			if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
				return err
			}
		}
		switch {
		case detach:
			return errDetached
		case errors.Is(ch.err, io.EOF):
			return io.EOF
		case ch.err != nil:
			return fmt.Errorf("reading stdin: %w", ch.err)
		}
	}
}

// pump writes what the server sends: binary messages to out as they
// are, text messages (notices) to notices. A normal close by the server is
// reported on notices with its reason and is no error.
func pump(ctx context.Context, conn *websocket.Conn, out, notices io.Writer, nl string) error {
	for {
		typ, b, err := conn.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				if ce.Code == websocket.StatusNormalClosure || ce.Code == websocket.StatusGoingAway {
					if ce.Reason != "" && ce.Reason != "detached" {
						fmt.Fprintf(notices, "%sThe console closed: %s%s", nl, ce.Reason, nl)
					}
					return nil
				}
				return fmt.Errorf("the server closed the console: %s (status %d)", ce.Reason, ce.Code)
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if typ == websocket.MessageText {
			fmt.Fprintf(notices, "%s%s", strings.TrimRight(string(b), "\r\n"), nl)
			continue
		}
		if _, err := out.Write(b); err != nil {
			return err
		}
	}
}
