package iam

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
)

// Store keys of signing keys. The active pointer and the keys share a
// prefix so one watch sees every change.
const (
	signingPrefix    = "/iam/signing/"
	signingActiveKey = signingPrefix + "active"
	signingKeyPrefix = signingPrefix + "keys/"
)

// ErrNoSigningKey is returned when no key can sign yet.
var ErrNoSigningKey = errors.New("iam: no active signing key")

// signingKeyRecord is a signing key as stored: the private key sealed with
// the at-rest key, the public key in the clear.
type signingKeyRecord struct {
	Kid       string     `json:"kid"`
	Alg       string     `json:"alg"`
	CreatedAt time.Time  `json:"createdAt"`
	RetiredAt *time.Time `json:"retiredAt,omitempty"`
	Public    []byte     `json:"public"`  // PKIX DER
	Private   []byte     `json:"private"` // sealed PKCS #8 DER
}

type publishedKey struct {
	pub     *ecdsa.PublicKey
	created time.Time
	retired *time.Time
}

// keyState is an immutable view of the signing keys.
type keyState struct {
	activeKid     string
	active        *ecdsa.PrivateKey
	activeCreated time.Time
	activeRev     int64 // ModRevision of the active pointer; 0 if none
	public        map[string]publishedKey
}

// KeyManager owns the token signing keys: ES256 (P-256) keys kept in the
// store with their private halves sealed, one active at a time. Rotation
// makes a new key active and retires the old one, which stays published
// (JWKS) until every token it signed has expired (retirement + access token
// lifetime + leeway) and is then deleted. It implements apiserver.KeySet
// from memory, so verification never touches the store.
type KeyManager struct {
	store    storage.Store
	sealer   *Sealer
	log      *slog.Logger
	now      func() time.Time
	rotation time.Duration
	retain   time.Duration

	mu    sync.Mutex // serializes loads and rotations
	state atomic.Pointer[keyState]
}

var _ apiserver.KeySet = (*KeyManager)(nil)

// NewKeyManager returns a key manager. rotation is the active key's
// lifetime; retain how long a retired key stays published.
func NewKeyManager(store storage.Store, sealer *Sealer, log *slog.Logger, now func() time.Time, rotation, retain time.Duration) *KeyManager {
	m := &KeyManager{store: store, sealer: sealer, log: log, now: now, rotation: rotation, retain: retain}
	m.state.Store(&keyState{public: map[string]publishedKey{}})
	return m
}

// Load reads the keys from the store.
func (m *KeyManager) Load(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loadLocked(ctx)
}

func (m *KeyManager) loadLocked(ctx context.Context) error {
	// Another node may rotate between our two reads. Reading the active
	// pointer before the keys means the keys we see are at least as new as
	// the pointer, and an active key is never deleted while it may still be
	// the pointer's target; the retry covers anything stranger.
	var err error
	for range 3 {
		if err = m.loadOnce(ctx); !errors.Is(err, errActiveKeyMissing) {
			return err
		}
	}
	return err
}

// errActiveKeyMissing: the active pointer names a key the range did not
// return.
var errActiveKeyMissing = errors.New("iam: the active signing key is missing")

func (m *KeyManager) loadOnce(ctx context.Context) error {
	active, err := m.store.Get(ctx, []byte(signingActiveKey))
	hasActive := err == nil
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("iam: loading the active signing key: %w", err)
	}
	kvs, _, err := m.store.Range(ctx, []byte(signingKeyPrefix), prefixEnd(signingKeyPrefix), 0)
	if err != nil {
		return fmt.Errorf("iam: loading signing keys: %w", err)
	}
	st := &keyState{public: map[string]publishedKey{}}
	recs := map[string]signingKeyRecord{}
	for _, kv := range kvs {
		var rec signingKeyRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return fmt.Errorf("iam: decoding signing key %s: %w", kv.Key, err)
		}
		pub, err := x509.ParsePKIXPublicKey(rec.Public)
		if err != nil {
			return fmt.Errorf("iam: signing key %s: %w", rec.Kid, err)
		}
		ec, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("iam: signing key %s is not ECDSA", rec.Kid)
		}
		recs[rec.Kid] = rec
		st.public[rec.Kid] = publishedKey{pub: ec, created: rec.CreatedAt, retired: rec.RetiredAt}
	}
	if hasActive {
		st.activeRev = active.ModRevision
		kid := string(active.Value)
		rec, ok := recs[kid]
		if !ok {
			return fmt.Errorf("%w: %s", errActiveKeyMissing, kid)
		}
		der, err := m.sealer.Open(signingKeyPrefix+kid, rec.Private)
		if err != nil {
			return fmt.Errorf("iam: opening signing key %s: %w", kid, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return fmt.Errorf("iam: signing key %s: %w", kid, err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("iam: signing key %s is not ECDSA", kid)
		}
		st.activeKid, st.active, st.activeCreated = kid, ec, rec.CreatedAt
	}
	m.state.Store(st)
	return nil
}

// EnsureCurrent rotates when there is no active key or it is older than
// the rotation period, and deletes retired keys no token can still use.
func (m *KeyManager) EnsureCurrent(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.loadLocked(ctx); err != nil {
		return err
	}
	st := m.state.Load()
	if st.active == nil || !m.now().Before(st.activeCreated.Add(m.rotation)) {
		if err := m.rotateLocked(ctx); err != nil {
			return err
		}
	}
	return m.pruneLocked(ctx)
}

// Rotate makes a new key active now and retires the current one.
func (m *KeyManager) Rotate(ctx context.Context) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.loadLocked(ctx); err != nil {
		return "", err
	}
	if err := m.rotateLocked(ctx); err != nil {
		return "", err
	}
	return m.state.Load().activeKid, nil
}

func (m *KeyManager) rotateLocked(ctx context.Context) error {
	st := m.state.Load()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("iam: generating signing key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return fmt.Errorf("iam: encoding signing key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("iam: encoding signing key: %w", err)
	}
	sum := sha256.Sum256(pubDER)
	kid := base64.RawURLEncoding.EncodeToString(sum[:12])
	sealed, err := m.sealer.Seal(signingKeyPrefix+kid, privDER)
	if err != nil {
		return err
	}
	now := m.now().UTC()
	val, err := json.Marshal(signingKeyRecord{Kid: kid, Alg: apiserver.SigningAlgorithm, CreatedAt: now, Public: pubDER, Private: sealed})
	if err != nil {
		return fmt.Errorf("iam: encoding signing key: %w", err)
	}
	ops := []storage.Op{
		{Type: storage.OpPut, Key: []byte(signingKeyPrefix + kid), Value: val},
		{Type: storage.OpPut, Key: []byte(signingActiveKey), Value: []byte(kid)},
	}
	if st.activeKid != "" {
		old, err := m.store.Get(ctx, []byte(signingKeyPrefix+st.activeKid))
		if err != nil {
			return fmt.Errorf("iam: reading the retiring key: %w", err)
		}
		var rec signingKeyRecord
		if err := json.Unmarshal(old.Value, &rec); err != nil {
			return fmt.Errorf("iam: decoding the retiring key: %w", err)
		}
		rec.RetiredAt = &now
		b, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("iam: encoding the retiring key: %w", err)
		}
		ops = append(ops, storage.Op{Type: storage.OpPut, Key: []byte(signingKeyPrefix + st.activeKid), Value: b})
	}
	res, err := m.store.Txn(ctx, storage.Txn{
		If:   []storage.Compare{{Key: []byte(signingActiveKey), Target: storage.CompareModRevision, Revision: st.activeRev}},
		Then: ops,
	})
	if err != nil {
		return fmt.Errorf("iam: storing the new signing key: %w", err)
	}
	if res.Succeeded {
		m.log.Info("signing key rotated", "kid", kid, "retired", st.activeKid)
	}
	// Lost a race with another node: its key is the active one now.
	return m.loadLocked(ctx)
}

func (m *KeyManager) pruneLocked(ctx context.Context) error {
	st := m.state.Load()
	now := m.now()
	var ops []storage.Op
	for kid, k := range st.public {
		if kid != st.activeKid && k.retired != nil && now.After(k.retired.Add(m.retain)) {
			ops = append(ops, storage.Op{Type: storage.OpDelete, Key: []byte(signingKeyPrefix + kid)})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if len(ops) > storage.MaxTxnOps {
		ops = ops[:storage.MaxTxnOps]
	}
	if _, err := m.store.Txn(ctx, storage.Txn{Then: ops}); err != nil {
		return fmt.Errorf("iam: deleting expired signing keys: %w", err)
	}
	m.log.Info("expired signing keys deleted", "count", len(ops))
	return m.loadLocked(ctx)
}

// Follow reloads the keys whenever another node (or a manual rotation)
// changes them, until ctx ends.
func (m *KeyManager) Follow(ctx context.Context) error {
	for ctx.Err() == nil {
		rev, _, err := m.store.Revision(ctx)
		if err == nil {
			err = m.Load(ctx)
		}
		if err == nil {
			err = m.follow(ctx, rev)
		}
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("iam signing key watch ended; reloading", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

func (m *KeyManager) follow(ctx context.Context, rev int64) error {
	w, err := m.store.Watch(ctx, []byte(signingPrefix), rev+1)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events():
			if !ok {
				if err := w.Err(); err != nil {
					return err
				}
				return errors.New("iam: watch closed")
			}
			if err := m.Load(ctx); err != nil {
				return err
			}
		}
	}
}

// PublicKey implements apiserver.KeySet.
func (m *KeyManager) PublicKey(_ context.Context, kid string) (crypto.PublicKey, bool) {
	k, ok := m.state.Load().public[kid]
	if !ok {
		return nil, false
	}
	return k.pub, true
}

// JWKS returns the published keys as a JSON Web Key Set, newest first.
func (m *KeyManager) JWKS() jose.JSONWebKeySet {
	st := m.state.Load()
	kids := make([]string, 0, len(st.public))
	for kid := range st.public {
		kids = append(kids, kid)
	}
	sort.Slice(kids, func(i, j int) bool {
		a, b := st.public[kids[i]], st.public[kids[j]]
		if !a.created.Equal(b.created) {
			return a.created.After(b.created)
		}
		return strings.Compare(kids[i], kids[j]) < 0
	})
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, kid := range kids {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: st.public[kid].pub, KeyID: kid, Algorithm: apiserver.SigningAlgorithm, Use: "sig"})
	}
	return set
}

// ActiveKid returns the active key's ID ("" if none).
func (m *KeyManager) ActiveKid() string { return m.state.Load().activeKid }

// Sign signs claims with the active key.
func (m *KeyManager) Sign(claims jwt.Claims) (string, error) {
	st := m.state.Load()
	if st.active == nil {
		return "", ErrNoSigningKey
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = st.activeKid
	s, err := tok.SignedString(st.active)
	if err != nil {
		return "", fmt.Errorf("iam: signing token: %w", err)
	}
	return s, nil
}
