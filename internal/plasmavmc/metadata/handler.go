package metadata

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// LookupFunc names the instance a request belongs to. It returns an error
// wrapping ErrNoInstance when there is none (answered 404); any other
// error is answered 500 and logged.
type LookupFunc func(r *http.Request) (*Instance, error)

// Config configures a Server.
type Config struct {
	// Lookup is required.
	Lookup LookupFunc
	// TokenKey signs IMDSv2 tokens; empty draws 32 random bytes, so tokens
	// die with the process (cloud-init asks for a new one on a 401).
	TokenKey []byte
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to discarding.
	Logger *slog.Logger
}

// Server answers cloud-init's EC2 and OpenStack metadata paths. It is safe
// for concurrent use and holds no per-instance state.
type Server struct {
	lookup LookupFunc
	key    []byte
	now    func() time.Time
	log    *slog.Logger
}

var _ http.Handler = (*Server)(nil)

// New returns a Server; it fails only on a missing Lookup.
func New(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("metadata: Config.Lookup is required")
	}
	s := &Server{lookup: cfg.Lookup, key: cfg.TokenKey, now: cfg.Now, log: cfg.Logger}
	if len(s.key) == 0 {
		s.key = make([]byte, 32)
		_, _ = rand.Read(s.key) // never fails (crypto/rand crashes the process instead)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Handler is New with defaults for everything but the lookup.
func Handler(lookup func(r *http.Request) (*Instance, error)) http.Handler {
	s, err := New(Config{Lookup: lookup})
	if err != nil {
		panic(err) // only a nil lookup, a programming error
	}
	return s
}

const tokenPath = "/latest/api/token"

// ServeHTTP answers GET and HEAD for documents and listings, PUT for the
// token; unknown paths 404, other methods 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store") // user-data may hold secrets
	h.Set("X-Content-Type-Options", "nosniff")

	inst, err := s.lookup(r)
	if err != nil || inst == nil {
		if err == nil || errors.Is(err, ErrNoInstance) {
			http.Error(w, "no instance for this address", http.StatusNotFound)
			return
		}
		s.log.Error("metadata lookup failed", "path", r.URL.Path, "err", err)
		http.Error(w, "metadata lookup failed", http.StatusInternalServerError)
		return
	}
	c, err := inst.normalized()
	if err != nil {
		s.log.Error("metadata instance invalid", "path", r.URL.Path, "err", err)
		http.Error(w, "instance metadata unavailable", http.StatusInternalServerError)
		return
	}

	if r.URL.Path == tokenPath {
		if r.Method != http.MethodPut {
			h.Set("Allow", http.MethodPut)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s.issue(w, r, c)
		return
	}

	if tok, ok := r.Header[http.CanonicalHeaderKey(HeaderToken)]; ok {
		if len(tok) != 1 || verifyToken(s.key, c.ID, tok[0], s.now()) != nil {
			http.Error(w, "invalid or expired token", http.StatusUnauthorized)
			return
		}
	}

	n, err := s.resolve(c, r.URL.Path)
	if err != nil {
		s.log.Error("metadata render failed", "path", r.URL.Path, "err", err)
		http.Error(w, "instance metadata unavailable", http.StatusInternalServerError)
		return
	}
	if n == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	body, ctype := n.leaf, n.ctype
	if !n.isLeaf {
		body, ctype = n.listing(), "text/plain; charset=utf-8"
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func (s *Server) issue(w http.ResponseWriter, r *http.Request, c *Instance) {
	ttl, err := parseTTL(r.Header.Get(HeaderTokenTTL))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	tok := issueToken(s.key, c.ID, s.now().Add(ttl))
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(tok)))
	h.Set(HeaderTokenTTL, strconv.Itoa(int(ttl/time.Second)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
}

// resolve finds the node for path, or nil when there is none. A directory
// answers with and without its trailing slash; a leaf only without.
func (s *Server) resolve(c *Instance, path string) (*node, error) {
	segs, trailing, ok := splitPath(path)
	if !ok {
		return nil, nil
	}
	root, err := tree(c)
	if err != nil {
		return nil, err
	}
	n := root
	for _, seg := range segs {
		if n.isLeaf {
			return nil, nil
		}
		if n = n.child(seg); n == nil {
			return nil, nil
		}
	}
	if n.isLeaf && trailing {
		return nil, nil
	}
	return n, nil
}

// splitPath splits an absolute URL path into its segments, refusing empty,
// "." and ".." segments (no cleaning: a path either names a node or not).
func splitPath(p string) (segs []string, trailing, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return nil, false, false
	}
	p = p[1:]
	if p == "" {
		return nil, true, true
	}
	if strings.HasSuffix(p, "/") {
		trailing = true
		p = p[:len(p)-1]
	}
	segs = strings.Split(p, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return nil, false, false
		}
	}
	return segs, trailing, true
}

// tree is the whole answer space of one instance: the EC2 versions and
// /openstack.
func tree(c *Instance) (*node, error) {
	ec2 := ec2Version(c)
	ostack, err := openstackTree(c)
	if err != nil {
		return nil, err
	}
	var kids []child
	for _, v := range ec2Versions {
		kids = append(kids, child{name: v, line: v, n: ec2})
	}
	// /openstack is reachable but not listed at the root, as with Nova.
	kids = append(kids, child{name: "openstack", hidden: true, n: ostack})
	return &node{children: kids}, nil
}

func openstackTree(c *Instance) (*node, error) {
	d, err := RenderOpenStack(c)
	if err != nil {
		return nil, fmt.Errorf("render openstack: %w", err)
	}
	js := func(b []byte) *node {
		return &node{leaf: b, isLeaf: true, ctype: "application/json"}
	}
	files := []child{
		{name: "meta_data.json", n: js(d.MetaData)},
		{name: "network_data.json", n: js(d.NetworkData)},
		{name: "vendor_data.json", n: js(d.VendorData)},
		{name: "vendor_data2.json", n: js(d.VendorData2)},
	}
	if d.UserData != nil {
		files = append(files, child{name: "user_data", n: &node{leaf: d.UserData, isLeaf: true, ctype: "application/octet-stream"}})
	}
	version := dir(files...)
	var vs []child
	for _, v := range openstackVersions {
		vs = append(vs, child{name: v, line: v, n: version})
	}
	// Listed in the order given (chronological, latest last), as Nova does.
	return &node{children: vs}, nil
}
