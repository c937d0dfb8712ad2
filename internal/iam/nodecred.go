package iam

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// Node credentials: a NodeCredential object names a node; creating it
// mints a one-time join token (shown once) whose SHA-256 is kept under
// nodeJoinPrefix; enrolling trades the join token for a node key (shown
// once) whose SHA-256 is kept under nodeKeyPrefix; the node key is then
// exchanged for access tokens of principal node:NAME (grant node_key).
// Both records live outside the resource tree, so no resource API can
// list, watch or return them, and both go when the object is deleted.
const (
	nodeJoinPrefix = "/iam/secrets/nodejoin/" // + node name
	nodeKeyPrefix  = "/iam/secrets/nodekeys/" // + node name
)

// Join token lifetimes.
const (
	defaultJoinTokenTTL = time.Hour
	minJoinTokenTTL     = time.Minute
	maxJoinTokenTTL     = 24 * time.Hour
)

// maxNodeSecretLen bounds the join token and node key a request may carry
// (both are 4 + 43 characters).
const maxNodeSecretLen = 128

// nodeJoinRecord is a node credential's unused join token.
type nodeJoinRecord struct {
	UID       string    `json:"uid"`
	Hash      string    `json:"hash"` // hex SHA-256 of the token
	ExpiresAt time.Time `json:"expiresAt"`
}

// nodeKeyRecord is an enrolled node's key.
type nodeKeyRecord struct {
	UID        string    `json:"uid"`
	Hash       string    `json:"hash"` // hex SHA-256 of the key
	EnrolledAt time.Time `json:"enrolledAt"`
}

// newNodeSecret returns prefix and 256 random bits, URL-safe base64.
func newNodeSecret(prefix string) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("iam: node secret: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

func secretHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// hashMatches compares the hash of secret with a stored hex hash in
// constant time.
func hashMatches(secret, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(secretHash(secret)), []byte(stored)) == 1
}

// joinTokenTTL parses a spec's joinTokenTTL ("" is the default).
func joinTokenTTL(s *iamv1.NodeCredentialSpec) (time.Duration, error) {
	if s.JoinTokenTTL == "" {
		return defaultJoinTokenTTL, nil
	}
	d, err := time.ParseDuration(s.JoinTokenTTL)
	if err != nil {
		return 0, apiserver.FieldError("spec.joinTokenTTL", "%q is not a duration (e.g. 30m, 1h)", s.JoinTokenTTL)
	}
	if d < minJoinTokenTTL || d > maxJoinTokenTTL {
		return 0, apiserver.FieldError("spec.joinTokenTTL", "%s must be between %s and %s", d, minJoinTokenTTL, maxJoinTokenTTL)
	}
	return d, nil
}

func (c *Component) nodeCredentialKind() apiserver.KindDef[iamv1.NodeCredentialSpec, iamv1.NodeCredentialStatus] {
	return apiserver.KindDef[iamv1.NodeCredentialSpec, iamv1.NodeCredentialStatus]{
		Kind: iamv1.NodeCredentialKind, Collection: iamv1.NodeCredentialCollection, Singular: "nodecredential",
		ShortNames: []string{"nodecred"}, Scope: api.ScopeCluster,
		Columns: []api.Column{{Name: "PHASE", Path: "status.phase"}, {Name: "ENROLLED AT", Path: "status.enrolledAt"},
			{Name: "JOIN TOKEN EXPIRES", Path: "status.joinTokenExpiresAt"}},
		MaxBody: 16 << 10,
		Default: func(s *iamv1.NodeCredentialSpec) {
			if s.JoinTokenTTL == "" {
				s.JoinTokenTTL = defaultJoinTokenTTL.String()
			}
		},
		ValidateSpec: func(s *iamv1.NodeCredentialSpec) error {
			_, err := joinTokenTTL(s)
			return err
		},
		ValidateUpdate: func(old, new *iamv1.NodeCredentialSpec) error {
			if old.JoinTokenTTL != new.JoinTokenTTL {
				return apiserver.FieldError("spec.joinTokenTTL", "is used only when the credential is created: delete it and create a new one for a new join token")
			}
			return nil
		},
		ValidateStatus: serverOwnedStatus[iamv1.NodeCredentialStatus]("node credential"),
		OnCreate:       c.createNodeCredential,
		OnDelete: func(_ context.Context, d *apiserver.Deletion[iamv1.NodeCredentialSpec, iamv1.NodeCredentialStatus]) error {
			name := d.Object.Metadata.Name
			d.Ops = append(d.Ops, storage.Op{Type: storage.OpDelete, Key: []byte(nodeJoinPrefix + name)},
				storage.Op{Type: storage.OpDelete, Key: []byte(nodeKeyPrefix + name)})
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.NodeCredentialCollection),
	}
}

// createNodeCredential mints the join token, stores only its hash and
// expiry with the object (replacing whatever a previous credential of the
// same name left), and shows the token in this response only.
func (c *Component) createNodeCredential(_ context.Context, cr *apiserver.Creation[iamv1.NodeCredentialSpec, iamv1.NodeCredentialStatus]) error {
	ttl, err := joinTokenTTL(cr.Spec)
	if err != nil {
		return err
	}
	tok, err := newNodeSecret(iamv1.JoinTokenPrefix)
	if err != nil {
		return err
	}
	exp := c.cfg.Now().UTC().Add(ttl).Truncate(time.Second)
	rec, err := json.Marshal(nodeJoinRecord{UID: cr.UID, Hash: secretHash(tok), ExpiresAt: exp})
	if err != nil {
		return fmt.Errorf("iam: encoding join token: %w", err)
	}
	cr.Ops = append(cr.Ops, storage.Op{Type: storage.OpPut, Key: []byte(nodeJoinPrefix + cr.Name), Value: rec},
		storage.Op{Type: storage.OpDelete, Key: []byte(nodeKeyPrefix + cr.Name)})
	*cr.Status = iamv1.NodeCredentialStatus{Phase: iamv1.NodeCredentialPending, JoinTokenExpiresAt: &exp}
	resp := *cr.Status
	resp.JoinToken = tok
	cr.ResponseStatus = &resp
	return nil
}

// badEnroll is the one answer to every failed enrollment, whatever the
// reason (unknown node, wrong, expired or used token), so it is no oracle.
func badEnroll() error {
	return apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
		"invalid node name or join token, or the token is expired or used: create a new credential with `ultracloud iam node-credential create NAME`")
}

// badNodeKey is the one answer to every refused node key exchange.
func badNodeKey() error {
	return apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
		"invalid node name or node key, or the node credential was deleted")
}

// nodeLimitKey is the rate-limit key of attempts for a node name.
func nodeLimitKey(node string) string {
	if apiserver.ValidateName("node", node) != nil {
		return "node:invalid"
	}
	return "node:" + node
}

// enrollNode serves POST /v1/auth/nodes/enroll (public; audit verb
// enroll): a node trades its one-time join token for a node key. In one
// transaction, guarded by the join record's and the object's revisions
// (so of two concurrent enrollments exactly one succeeds), the join record
// is deleted, the node key's hash is stored, and the credential becomes
// Enrolled.
func (c *Component) enrollNode(call *apiserver.Call, req *iamv1.NodeEnrollRequest) (*iamv1.NodeEnrollResponse, error) {
	ctx := call.Context()
	if ok, wait := c.limiter.allow(nodeLimitKey(req.Node), apiserver.SourceIP(call.Request), c.cfg.Now()); !ok {
		return nil, tooMany(call.Header(), wait)
	}
	if apiserver.ValidateName("node", req.Node) != nil || !strings.HasPrefix(req.JoinToken, iamv1.JoinTokenPrefix) ||
		len(req.JoinToken) > maxNodeSecretLen {
		return nil, badEnroll()
	}
	apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Name = req.Node })
	joinKey := []byte(nodeJoinPrefix + req.Node)
	objKey := apiserver.ObjectKey(iamv1.NodeCredentialCollection, "", req.Node)
	for attempt := 0; ; attempt++ {
		jkv, err := c.store.Get(ctx, joinKey)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, badEnroll()
		}
		if err != nil {
			return nil, err
		}
		var rec nodeJoinRecord
		if err := json.Unmarshal(jkv.Value, &rec); err != nil {
			return nil, fmt.Errorf("iam: decoding join record of %s: %w", req.Node, err)
		}
		now := c.cfg.Now().UTC()
		if !hashMatches(req.JoinToken, rec.Hash) || !now.Before(rec.ExpiresAt) {
			return nil, badEnroll()
		}
		okv, err := c.store.Get(ctx, objKey)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, badEnroll()
		}
		if err != nil {
			return nil, err
		}
		o, err := apiserver.DecodeObject(okv)
		if err != nil {
			return nil, err
		}
		var st iamv1.NodeCredentialStatus
		if len(o.Status) > 0 {
			_ = json.Unmarshal(o.Status, &st)
		}
		if o.Metadata.UID != rec.UID || st.Phase != iamv1.NodeCredentialPending {
			return nil, badEnroll()
		}
		key, err := newNodeSecret(iamv1.NodeKeyPrefix)
		if err != nil {
			return nil, err
		}
		at := now.Truncate(time.Millisecond)
		keyRec, err := json.Marshal(nodeKeyRecord{UID: rec.UID, Hash: secretHash(key), EnrolledAt: at})
		if err != nil {
			return nil, fmt.Errorf("iam: encoding node key: %w", err)
		}
		st = iamv1.NodeCredentialStatus{Phase: iamv1.NodeCredentialEnrolled, EnrolledAt: &at}
		if o.Status, err = json.Marshal(st); err != nil {
			return nil, err
		}
		o.Metadata.UpdatedAt = &at
		val, err := apiserver.EncodeObject(o)
		if err != nil {
			return nil, err
		}
		res, err := c.store.Txn(ctx, storage.Txn{
			If: []storage.Compare{{Key: joinKey, Target: storage.CompareModRevision, Revision: jkv.ModRevision},
				{Key: objKey, Target: storage.CompareModRevision, Revision: okv.ModRevision}},
			Then: []storage.Op{{Type: storage.OpDelete, Key: joinKey},
				{Type: storage.OpPut, Key: []byte(nodeKeyPrefix + req.Node), Value: keyRec},
				{Type: storage.OpPut, Key: objKey, Value: val}},
		})
		if err != nil {
			return nil, fmt.Errorf("iam: enrolling node %s: %w", req.Node, err)
		}
		if res.Succeeded {
			principal := iamv1.NodePrincipal(req.Node)
			apiserver.AnnotateAudit(ctx, func(e *apiserver.AuditEvent) { e.Principal = principal })
			// The node's first token exchange, moments from now, must find
			// it Enrolled in the policy mirror.
			c.policy.WaitFor(ctx, iamv1.NodeCredentialCollection, res.Revision, 2*time.Second)
			c.log.Info("node enrolled", "node", req.Node)
			return &iamv1.NodeEnrollResponse{Node: req.Node, NodeKey: key, Principal: principal}, nil
		}
		// Lost a race: if the join record is gone (another enrollment used
		// it) the next read refuses; if only the object changed (a label
		// edit), try again.
		if attempt >= 5 {
			return nil, badEnroll()
		}
	}
}

// nodeKeyPrincipal checks a node name and key and returns the principal
// and the NodeCredential's UID.
func (c *Component) nodeKeyPrincipal(ctx context.Context, node, key string) (string, string, error) {
	if apiserver.ValidateName("node", node) != nil || !strings.HasPrefix(key, iamv1.NodeKeyPrefix) || len(key) > maxNodeSecretLen {
		return "", "", badNodeKey()
	}
	kv, err := c.store.Get(ctx, []byte(nodeKeyPrefix+node))
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", badNodeKey()
	}
	if err != nil {
		return "", "", err
	}
	var rec nodeKeyRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return "", "", fmt.Errorf("iam: decoding node key of %s: %w", node, err)
	}
	if !hashMatches(key, rec.Hash) {
		return "", "", badNodeKey()
	}
	o, err := c.getObject(ctx, iamv1.NodeCredentialCollection, "", node)
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", badNodeKey()
	}
	if err != nil {
		return "", "", err
	}
	var st iamv1.NodeCredentialStatus
	if len(o.Status) > 0 {
		_ = json.Unmarshal(o.Status, &st)
	}
	if o.Metadata.UID != rec.UID || st.Phase != iamv1.NodeCredentialEnrolled {
		return "", "", badNodeKey()
	}
	return iamv1.NodePrincipal(node), rec.UID, nil
}
