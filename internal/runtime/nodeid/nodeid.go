// Package nodeid is a node's identity towards the control plane, for nodes
// that run no iam (workers with only host agents): it enrolls the node
// once with the one-time join token of its NodeCredential, keeps the node
// key it gets in <dataDir>/node-credential (mode 0600), and exchanges that
// key for short-lived access tokens of principal node:NAME, renewed before
// they expire. Every agent on the node authenticates with those tokens.
//
// It owns the credential file and the token cache. It must not import any
// component (it is runtime): it talks to iam only through pkg/ (the
// iamclient SDK), and it never logs or reports the join token or the node
// key.
package nodeid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
	"github.com/ultracloud/ultracloud/pkg/client"
	"github.com/ultracloud/ultracloud/pkg/client/iamclient"
)

// CredentialFile is the credential's file name in the data directory.
const CredentialFile = "node-credential"

// Errors of the node identity.
var (
	// ErrCredentialMode: the credential file may be read by others.
	ErrCredentialMode = errors.New("nodeid: credential file is readable by others")
	// ErrBadCredential: the credential file is malformed or names another
	// node.
	ErrBadCredential = errors.New("nodeid: bad credential file")
	// ErrNoJoinToken: there is neither a credential nor a join token.
	ErrNoJoinToken = errors.New("nodeid: no credential and no join token")
	// ErrJoinRefused: the control plane refused the join token (wrong,
	// expired, used, or no such node credential). Permanent.
	ErrJoinRefused = errors.New("nodeid: the join token was refused")
	// ErrKeyRefused: the control plane refused the node key (the node
	// credential was deleted).
	ErrKeyRefused = errors.New("nodeid: the node key was refused")
)

// Config says who the node is and where the control plane is.
type Config struct {
	// Node is the node's name; its NodeCredential has the same name.
	Node string
	// DataDir holds the credential file.
	DataDir string
	// Endpoints are the control plane's API base URLs (nodes running iam),
	// tried in turn.
	Endpoints []string
	// JoinTokenFile holds the join token, read only when there is no
	// credential yet.
	JoinTokenFile string
	// HTTPClient makes the requests (a default client if nil).
	HTTPClient *http.Client
	// Logger receives progress (discarded if nil).
	Logger *slog.Logger
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// MinBackoff and MaxBackoff bound the wait between enrollment attempts
	// while the control plane is unreachable (500ms and 30s if 0).
	MinBackoff, MaxBackoff time.Duration
}

// Credential is what the credential file holds.
type Credential struct {
	Node    string `json:"node"`
	NodeKey string `json:"nodeKey"`
	// Endpoint is the control-plane endpoint that enrolled the node.
	Endpoint string `json:"endpoint"`
}

// Identity is a node's identity: its credential once obtained, and its
// current access token. It is a client.TokenSource (with Invalidate, so
// the SDK renews a token the server refused) and safe for concurrent use.
type Identity struct {
	cfg  Config
	path string
	log  *slog.Logger
	iam  []*iamclient.Client // one per endpoint, unauthenticated

	have chan struct{} // closed once cred is set
	once sync.Once

	mu       sync.Mutex
	cred     Credential
	current  int // index of the endpoint that last answered
	token    string
	issued   time.Time
	expires  time.Time
	keyError error // the last refusal of the node key, for reports
}

var _ client.TokenSource = (*Identity)(nil)

// New checks cfg and returns the node's identity; it touches nothing
// (Obtain loads or enrolls).
func New(cfg Config) (*Identity, error) {
	if cfg.Node == "" {
		return nil, errors.New("nodeid: no node name")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("nodeid: no data directory")
	}
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("nodeid: no control-plane endpoints")
	}
	if cfg.JoinTokenFile == "" {
		cfg.JoinTokenFile = filepath.Join(cfg.DataDir, "join-token")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	id := &Identity{cfg: cfg, path: filepath.Join(cfg.DataDir, CredentialFile), log: cfg.Logger, have: make(chan struct{})}
	for _, e := range cfg.Endpoints {
		c, err := client.New(client.Config{Endpoint: e, HTTPClient: cfg.HTTPClient, UserAgent: "ultracloud-node/" + strconv.Itoa(api.Version)})
		if err != nil {
			return nil, fmt.Errorf("nodeid: %w", err)
		}
		id.iam = append(id.iam, iamclient.New(c))
	}
	return id, nil
}

// Principal is the node's principal name, node:NAME.
func (id *Identity) Principal() string { return iamv1.NodePrincipal(id.cfg.Node) }

// CredentialPath is the credential file's path.
func (id *Identity) CredentialPath() string { return id.path }

// Endpoint returns the control-plane endpoint that last answered (the
// first configured one until something answered).
func (id *Identity) Endpoint() string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cfg.Endpoints[id.current]
}

// HasCredential reports whether the identity holds a credential.
func (id *Identity) HasCredential() bool {
	select {
	case <-id.have:
		return true
	default:
		return false
	}
}

// TokenExpiry returns when the current access token expires (zero if
// there is none).
func (id *Identity) TokenExpiry() time.Time {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.expires
}

// Obtain loads the credential file, or else reads the join token file and
// enrolls, retrying with backoff while the control plane is unreachable or
// busy, and saves the credential. A refused join token is permanent
// (ErrJoinRefused, with what the operator must do). Safe to call again: a
// held credential is returned at once.
func (id *Identity) Obtain(ctx context.Context) (Credential, error) {
	if id.HasCredential() {
		id.mu.Lock()
		defer id.mu.Unlock()
		return id.cred, nil
	}
	cred, err := id.load()
	if err == nil {
		id.set(cred)
		id.log.Info("node credential loaded", "node", id.cfg.Node, "file", id.path)
		return cred, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Credential{}, err
	}
	tok, err := id.readJoinToken()
	if err != nil {
		return Credential{}, err
	}
	cred, err = id.enroll(ctx, tok)
	if err != nil {
		return Credential{}, err
	}
	if err := id.save(cred); err != nil {
		return Credential{}, err
	}
	id.set(cred)
	id.log.Info("node enrolled; credential saved", "node", id.cfg.Node, "file", id.path, "endpoint", cred.Endpoint)
	return cred, nil
}

func (id *Identity) set(cred Credential) {
	id.mu.Lock()
	id.cred = cred
	for i, e := range id.cfg.Endpoints {
		if e == cred.Endpoint {
			id.current = i
		}
	}
	id.mu.Unlock()
	id.once.Do(func() { close(id.have) })
}

// load reads and checks the credential file.
func (id *Identity) load() (Credential, error) {
	fi, err := os.Stat(id.path)
	if err != nil {
		return Credential{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return Credential{}, fmt.Errorf("%w: %s has mode %o; it holds the node's key and must be readable by its owner only (chmod 600 %s)",
			ErrCredentialMode, id.path, fi.Mode().Perm(), id.path)
	}
	b, err := os.ReadFile(id.path)
	if err != nil {
		return Credential{}, fmt.Errorf("nodeid: reading %s: %w", id.path, err)
	}
	var cred Credential
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cred); err != nil {
		return Credential{}, fmt.Errorf("%w: %s is not a node credential ({node, nodeKey, endpoint}): %v", ErrBadCredential, id.path, err)
	}
	if cred.Node != id.cfg.Node {
		return Credential{}, fmt.Errorf("%w: %s is the credential of node %q, not of this node %q: delete it and enroll with a join token",
			ErrBadCredential, id.path, cred.Node, id.cfg.Node)
	}
	if !strings.HasPrefix(cred.NodeKey, iamv1.NodeKeyPrefix) {
		return Credential{}, fmt.Errorf("%w: %s holds no node key", ErrBadCredential, id.path)
	}
	return cred, nil
}

// readJoinToken reads the join token file.
func (id *Identity) readJoinToken() (string, error) {
	b, err := os.ReadFile(id.cfg.JoinTokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist and there is no join token in %s: create a credential with "+
			"`ultracloud iam node-credential create %s` and write its join token to %s",
			ErrNoJoinToken, id.path, id.cfg.JoinTokenFile, id.cfg.Node, id.cfg.JoinTokenFile)
	}
	if err != nil {
		return "", fmt.Errorf("nodeid: reading the join token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if !strings.HasPrefix(tok, iamv1.JoinTokenPrefix) {
		return "", fmt.Errorf("%w: %s does not hold a join token (one starts with %q): write the token "+
			"`ultracloud iam node-credential create %s` printed", ErrNoJoinToken, id.cfg.JoinTokenFile, iamv1.JoinTokenPrefix, id.cfg.Node)
	}
	return tok, nil
}

// permanent reports whether an error from the control plane will not go
// away by retrying: any answer but 429 and 5xx.
func permanent(err error) bool {
	p, ok := client.ProblemOf(err)
	return ok && p.Status != http.StatusTooManyRequests && p.Status < 500
}

// enroll trades the join token for the node key, trying the endpoints in
// turn and backing off between rounds until one answers.
func (id *Identity) enroll(ctx context.Context, tok string) (Credential, error) {
	wait := id.cfg.MinBackoff
	for {
		var last error
		for i, c := range id.iam {
			resp, err := c.EnrollNode(ctx, id.cfg.Node, tok)
			if err == nil {
				return Credential{Node: id.cfg.Node, NodeKey: resp.NodeKey, Endpoint: id.cfg.Endpoints[i]}, nil
			}
			if client.HasCode(err, api.CodeUnauthenticated) {
				return Credential{}, fmt.Errorf("%w by %s for node %s (wrong, expired or already used, or no such credential): "+
					"create a new credential with `ultracloud iam node-credential create %s` and put its join token in %s",
					ErrJoinRefused, id.cfg.Endpoints[i], id.cfg.Node, id.cfg.Node, id.cfg.JoinTokenFile)
			}
			if permanent(err) {
				return Credential{}, fmt.Errorf("nodeid: enrolling at %s: %w", id.cfg.Endpoints[i], err)
			}
			last = err
		}
		if ctx.Err() != nil {
			return Credential{}, fmt.Errorf("nodeid: enrolling node %s: %w (last error: %v)", id.cfg.Node, ctx.Err(), last)
		}
		if p, ok := client.ProblemOf(last); ok && p.Status == http.StatusTooManyRequests {
			wait = max(wait, 6*time.Second)
		}
		id.log.Warn("control plane unreachable; retrying enrollment", "node", id.cfg.Node, "in", wait, "err", last)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Credential{}, fmt.Errorf("nodeid: enrolling node %s: %w (last error: %v)", id.cfg.Node, ctx.Err(), last)
		case <-t.C:
		}
		wait = min(2*wait, id.cfg.MaxBackoff)
	}
}

// save writes the credential atomically with mode 0600: a temporary file
// in the same directory, synced, renamed over the old one, the directory
// synced.
func (id *Identity) save(cred Credential) error {
	b, err := json.Marshal(cred)
	if err != nil {
		return fmt.Errorf("nodeid: encoding the credential: %w", err)
	}
	if err := os.MkdirAll(id.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("nodeid: %w", err)
	}
	f, err := os.CreateTemp(id.cfg.DataDir, CredentialFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	if err := os.Rename(tmp, id.path); err != nil {
		return fmt.Errorf("nodeid: writing the credential: %w", err)
	}
	ok = true
	if d, err := os.Open(id.cfg.DataDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// renewMargin is how long before expiry a token is renewed: a quarter of
// its lifetime, at most 30s, so skew and request time never present an
// expired one.
func renewMargin(issued, expires time.Time) time.Duration {
	return min(30*time.Second, expires.Sub(issued)/4)
}

// Token implements client.TokenSource: the current access token, or a
// new one exchanged for the node key when it is missing or close to
// expiry. It waits for the credential (until ctx ends) if Obtain has not
// got one yet. A refused node key is ErrKeyRefused.
func (id *Identity) Token(ctx context.Context) (string, error) {
	select {
	case <-id.have:
	case <-ctx.Done():
		return "", fmt.Errorf("nodeid: waiting for the node credential: %w", ctx.Err())
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	now := id.cfg.Now()
	if id.token != "" && now.Add(renewMargin(id.issued, id.expires)).Before(id.expires) {
		return id.token, nil
	}
	var last error
	n := len(id.iam)
	for k := range n {
		i := (id.current + k) % n
		resp, err := id.iam[i].ExchangeNodeKey(ctx, id.cred.Node, id.cred.NodeKey)
		if err == nil {
			id.current = i
			id.token, id.issued, id.expires, id.keyError = resp.AccessToken, now, resp.ExpiresAt, nil
			return id.token, nil
		}
		if client.HasCode(err, api.CodeUnauthenticated) {
			id.current = i
			id.token, id.expires = "", time.Time{}
			id.keyError = fmt.Errorf("%w by %s: the node credential %s was deleted or replaced; create a new one with "+
				"`ultracloud iam node-credential create %s`, put its join token in %s and delete %s",
				ErrKeyRefused, id.cfg.Endpoints[i], id.cfg.Node, id.cfg.Node, id.cfg.JoinTokenFile, id.path)
			return "", id.keyError
		}
		last = err
		if permanent(err) {
			break
		}
	}
	return "", fmt.Errorf("nodeid: exchanging the node key of %s: %w", id.cfg.Node, last)
}

// Invalidate forgets tok if it is the current token (the server refused
// it), so the next Token call exchanges the key again.
func (id *Identity) Invalidate(tok string) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.token == tok {
		id.token, id.expires = "", time.Time{}
	}
}

// KeyError returns why the node key was last refused (nil if it was not,
// or a later exchange worked).
func (id *Identity) KeyError() error {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.keyError
}
