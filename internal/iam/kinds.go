package iam

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ultracloud/ultracloud/internal/runtime/apiserver"
	"github.com/ultracloud/ultracloud/internal/runtime/storage"
	"github.com/ultracloud/ultracloud/pkg/api"
	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// Store keys of secret material, outside the resource tree so no resource
// API can ever list, watch or return them.
const (
	passwordPrefix  = "/iam/secrets/passwords/"  // + user name
	accessKeyPrefix = "/iam/secrets/accesskeys/" // + access key ID
)

// passwordRecord is a user's password hash. ID changes with every new
// password; refresh tokens remember it, so a change ends old sessions.
type passwordRecord struct {
	ID        string    `json:"id"`
	UID       string    `json:"uid"`
	Hash      string    `json:"hash"`
	ChangedAt time.Time `json:"changedAt"`
}

// accessKeyRecord is an access key's secret, sealed, and what it belongs to.
type accessKeyRecord struct {
	Project   string `json:"project"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
	Principal string `json:"principal"`
	Secret    []byte `json:"secret"` // sealed
}

func textLen(field, s string, maxRunes int) error {
	if n := utf8.RuneCountInString(s); n > maxRunes {
		return apiserver.FieldError(field, "is %d characters; at most %d", n, maxRunes)
	}
	return nil
}

// serverOwnedStatus refuses status writes for kinds whose status only iam
// sets.
func serverOwnedStatus[T any](kind string) func(*T) error {
	return func(*T) error {
		return apiserver.FieldError("status", "the status of a %s is set by the server and cannot be written", kind)
	}
}

// projectMustExist is the precondition of creating a project-scoped iam
// object: its project exists.
func projectMustExist(project string) apiserver.Precondition {
	return apiserver.Precondition{
		Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.ProjectCollection, "", project), Target: storage.CompareExists},
		Err:     apiserver.Errorf(http.StatusNotFound, api.CodeNotFound, "project %q not found", project),
	}
}

// waitPolicy makes writes of a policy collection wait until the policy
// reflects them, so the writer's next request sees its change.
func (c *Component) waitPolicy(coll string) func(context.Context, int64) {
	return func(ctx context.Context, rev int64) { c.policy.WaitFor(ctx, coll, rev, 2*time.Second) }
}

// ProjectKind declares the Project resource.
func ProjectKind() apiserver.KindDef[iamv1.ProjectSpec, iamv1.ProjectStatus] {
	return apiserver.KindDef[iamv1.ProjectSpec, iamv1.ProjectStatus]{
		Kind: iamv1.ProjectKind, Collection: iamv1.ProjectCollection, Singular: "project", ShortNames: []string{"proj"},
		Scope:   api.ScopeCluster,
		Columns: []api.Column{{Name: "DISPLAY NAME", Path: "spec.displayName"}, {Name: "PHASE", Path: "status.phase"}},
		MaxBody: 64 << 10,
		ValidateSpec: func(s *iamv1.ProjectSpec) error {
			if err := textLen("spec.displayName", s.DisplayName, 128); err != nil {
				return err
			}
			return textLen("spec.description", s.Description, 1024)
		},
		// A project is usable the moment it exists; the project controller
		// repairs any project that lacks the phase.
		InitialStatus: func(*iamv1.ProjectSpec) *iamv1.ProjectStatus { return &iamv1.ProjectStatus{Phase: "Active"} },
		ValidateStatus: func(s *iamv1.ProjectStatus) error {
			switch s.Phase {
			case "", "Active", "Terminating":
				return nil
			}
			return apiserver.FieldError("status.phase", "%q is not Active or Terminating", s.Phase)
		},
	}
}

func (c *Component) projectKind() apiserver.KindDef[iamv1.ProjectSpec, iamv1.ProjectStatus] {
	k := ProjectKind()
	k.AfterWrite = c.waitPolicy(iamv1.ProjectCollection)
	return k
}

func (c *Component) userKind() apiserver.KindDef[iamv1.UserSpec, iamv1.UserStatus] {
	return apiserver.KindDef[iamv1.UserSpec, iamv1.UserStatus]{
		Kind: iamv1.UserKind, Collection: iamv1.UserCollection, Singular: "user", Scope: api.ScopeCluster,
		Columns: []api.Column{{Name: "DISPLAY NAME", Path: "spec.displayName"}, {Name: "EMAIL", Path: "spec.email"},
			{Name: "DISABLED", Path: "spec.disabled"}, {Name: "PASSWORD", Path: "status.passwordSet"}},
		MaxBody: 16 << 10,
		ValidateSpec: func(s *iamv1.UserSpec) error {
			if err := textLen("spec.displayName", s.DisplayName, 128); err != nil {
				return err
			}
			if s.Email != "" {
				if len(s.Email) > 254 {
					return apiserver.FieldError("spec.email", "is longer than 254 characters")
				}
				if a, err := mail.ParseAddress(s.Email); err != nil || a.Address != s.Email {
					return apiserver.FieldError("spec.email", "is not an email address like name@example.com")
				}
			}
			return nil
		},
		ValidateStatus: serverOwnedStatus[iamv1.UserStatus]("user"),
		OnDelete: func(_ context.Context, d *apiserver.Deletion[iamv1.UserSpec, iamv1.UserStatus]) error {
			d.Ops = append(d.Ops, storage.Op{Type: storage.OpDelete, Key: []byte(passwordPrefix + d.Object.Metadata.Name)})
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.UserCollection),
		Actions:    []apiserver.Action{c.passwordAction()},
	}
}

func (c *Component) serviceAccountKind() apiserver.KindDef[iamv1.ServiceAccountSpec, iamv1.ServiceAccountStatus] {
	return apiserver.KindDef[iamv1.ServiceAccountSpec, iamv1.ServiceAccountStatus]{
		Kind: iamv1.ServiceAccountKind, Collection: iamv1.ServiceAccountCollection, Singular: "serviceaccount",
		ShortNames: []string{"sa"}, Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "DISPLAY NAME", Path: "spec.displayName"}, {Name: "DISABLED", Path: "spec.disabled"}},
		MaxBody: 16 << 10,
		ValidateSpec: func(s *iamv1.ServiceAccountSpec) error {
			if err := textLen("spec.displayName", s.DisplayName, 128); err != nil {
				return err
			}
			return textLen("spec.description", s.Description, 1024)
		},
		OnCreate: func(_ context.Context, cr *apiserver.Creation[iamv1.ServiceAccountSpec, iamv1.ServiceAccountStatus]) error {
			cr.Require = append(cr.Require, projectMustExist(cr.Project))
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.ServiceAccountCollection),
	}
}

func (c *Component) roleKind() apiserver.KindDef[iamv1.RoleSpec, iamv1.RoleStatus] {
	return apiserver.KindDef[iamv1.RoleSpec, iamv1.RoleStatus]{
		Kind: iamv1.RoleKind, Collection: iamv1.RoleCollection, Singular: "role", Scope: api.ScopeCluster,
		Columns: []api.Column{{Name: "PERMISSIONS", Path: "spec.permissions"}},
		MaxBody: 64 << 10,
		ValidateSpec: func(s *iamv1.RoleSpec) error {
			if err := textLen("spec.description", s.Description, 1024); err != nil {
				return err
			}
			if len(s.Permissions) == 0 || len(s.Permissions) > 256 {
				return apiserver.FieldError("spec.permissions", "needs 1 to 256 patterns, got %d", len(s.Permissions))
			}
			for i, p := range s.Permissions {
				if _, err := ParsePattern(p); err != nil {
					return apiserver.FieldError(fmt.Sprintf("spec.permissions[%d]", i), "%v", err)
				}
			}
			return nil
		},
		OnCreate: func(_ context.Context, cr *apiserver.Creation[iamv1.RoleSpec, iamv1.RoleStatus]) error {
			if _, builtin := builtinRoles[cr.Name]; builtin {
				return apiserver.FieldError("metadata.name", "%q is a built-in role; pick another name", cr.Name)
			}
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.RoleCollection),
	}
}

// validateBinding checks a binding's spec.
func validateBinding(s *iamv1.RoleBindingSpec) error {
	if err := apiserver.ValidateName("spec.role", s.Role); err != nil {
		return err
	}
	p, err := iamv1.ParsePrincipal(s.Principal)
	if err != nil {
		return apiserver.FieldError("spec.principal", "%q is not user:NAME or serviceaccount:PROJECT/NAME", s.Principal)
	}
	if p.Project != "" {
		if err := apiserver.ValidateName("spec.principal", p.Project); err != nil {
			return err
		}
	}
	return apiserver.ValidateName("spec.principal", p.Name)
}

func immutableBinding(old, new *iamv1.RoleBindingSpec) error {
	if old.Role != new.Role {
		return apiserver.FieldError("spec.role", "is immutable: delete the binding and create a new one")
	}
	if old.Principal != new.Principal {
		return apiserver.FieldError("spec.principal", "is immutable: delete the binding and create a new one")
	}
	return nil
}

// roleMustExist is the precondition of binding a custom role.
func roleMustExist(role string) []apiserver.Precondition {
	if _, builtin := builtinRoles[role]; builtin {
		return nil
	}
	return []apiserver.Precondition{{
		Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.RoleCollection, "", role), Target: storage.CompareExists},
		Err:     apiserver.FieldError("spec.role", "role %q does not exist (built-in roles: admin, member, viewer; `ultracloud iam role list`)", role),
	}}
}

func (c *Component) roleBindingKind() apiserver.KindDef[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus] {
	return apiserver.KindDef[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus]{
		Kind: iamv1.RoleBindingKind, Collection: iamv1.RoleBindingCollection, Singular: "rolebinding",
		ShortNames: []string{"binding"}, Scope: api.ScopeProject,
		Columns:        []api.Column{{Name: "ROLE", Path: "spec.role"}, {Name: "PRINCIPAL", Path: "spec.principal"}},
		MaxBody:        16 << 10,
		ValidateSpec:   validateBinding,
		ValidateUpdate: immutableBinding,
		OnCreate: func(_ context.Context, cr *apiserver.Creation[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus]) error {
			cr.Require = append(append(cr.Require, projectMustExist(cr.Project)), roleMustExist(cr.Spec.Role)...)
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.RoleBindingCollection),
	}
}

func (c *Component) clusterRoleBindingKind() apiserver.KindDef[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus] {
	return apiserver.KindDef[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus]{
		Kind: iamv1.ClusterRoleBindingKind, Collection: iamv1.ClusterRoleBindingCollection, Singular: "clusterrolebinding",
		ShortNames: []string{"crb"}, Scope: api.ScopeCluster,
		Columns:        []api.Column{{Name: "ROLE", Path: "spec.role"}, {Name: "PRINCIPAL", Path: "spec.principal"}},
		MaxBody:        16 << 10,
		ValidateSpec:   validateBinding,
		ValidateUpdate: immutableBinding,
		OnCreate: func(_ context.Context, cr *apiserver.Creation[iamv1.RoleBindingSpec, iamv1.RoleBindingStatus]) error {
			cr.Require = append(cr.Require, roleMustExist(cr.Spec.Role)...)
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.ClusterRoleBindingCollection),
	}
}

// newAccessKeyID returns "UCAK" and 16 base32 characters (80 random bits).
func newAccessKeyID() (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("iam: access key ID: %w", err)
	}
	return "UCAK" + base32.StdEncoding.EncodeToString(b[:]), nil
}

// newAccessKeySecret returns 40 characters (240 random bits).
func newAccessKeySecret() (string, error) {
	var b [30]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("iam: access key secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// validAccessKeyID reports whether s has the shape newAccessKeyID makes.
func validAccessKeyID(s string) bool {
	if len(s) != 20 || !strings.HasPrefix(s, "UCAK") {
		return false
	}
	for i := 4; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func (c *Component) accessKeyKind() apiserver.KindDef[iamv1.AccessKeySpec, iamv1.AccessKeyStatus] {
	return apiserver.KindDef[iamv1.AccessKeySpec, iamv1.AccessKeyStatus]{
		Kind: iamv1.AccessKeyKind, Collection: iamv1.AccessKeyCollection, Singular: "accesskey",
		ShortNames: []string{"ak"}, Scope: api.ScopeProject,
		Columns: []api.Column{{Name: "ACCESS KEY ID", Path: "status.accessKeyId"}, {Name: "USER", Path: "spec.user"},
			{Name: "SERVICE ACCOUNT", Path: "spec.serviceAccount"}, {Name: "DISABLED", Path: "spec.disabled"}},
		MaxBody: 16 << 10,
		ValidateSpec: func(s *iamv1.AccessKeySpec) error {
			if err := textLen("spec.description", s.Description, 1024); err != nil {
				return err
			}
			switch {
			case (s.User == "") == (s.ServiceAccount == ""):
				return apiserver.FieldError("spec", "set exactly one of spec.user and spec.serviceAccount")
			case s.User != "":
				return apiserver.ValidateName("spec.user", s.User)
			}
			return apiserver.ValidateName("spec.serviceAccount", s.ServiceAccount)
		},
		ValidateUpdate: func(old, new *iamv1.AccessKeySpec) error {
			if old.User != new.User || old.ServiceAccount != new.ServiceAccount {
				return apiserver.FieldError("spec", "spec.user and spec.serviceAccount are immutable")
			}
			return nil
		},
		ValidateStatus: serverOwnedStatus[iamv1.AccessKeyStatus]("access key"),
		OnCreate:       c.createAccessKey,
		OnDelete: func(_ context.Context, d *apiserver.Deletion[iamv1.AccessKeySpec, iamv1.AccessKeyStatus]) error {
			if d.Status.AccessKeyID != "" {
				d.Ops = append(d.Ops, storage.Op{Type: storage.OpDelete, Key: []byte(accessKeyPrefix + d.Status.AccessKeyID)})
			}
			return nil
		},
		AfterWrite: c.waitPolicy(iamv1.AccessKeyCollection),
	}
}

// createAccessKey mints the key ID and secret, seals the secret into the
// same transaction as the object, and shows the secret in this response
// only. A key acting as a user may be created only by that user or by a
// principal allowed to update users cluster-wide (otherwise anyone able to
// create keys in a project could act as any user); a key for a service
// account needs the account to exist in the key's project.
func (c *Component) createAccessKey(ctx context.Context, cr *apiserver.Creation[iamv1.AccessKeySpec, iamv1.AccessKeyStatus]) error {
	var principal string
	cr.Require = append(cr.Require, projectMustExist(cr.Project))
	if u := cr.Spec.User; u != "" {
		principal = iamv1.UserPrincipal(u)
		if pr, ok := apiserver.PrincipalFrom(ctx); ok && !pr.Superuser && pr.Name != principal &&
			!c.policy.Allowed(ctx, pr, Permission{"iam", "users", "update"}, "") {
			return apiserver.Errorf(http.StatusForbidden, api.CodeForbidden,
				"%s may not create access keys for %s: only that user, or a principal allowed iam.users.update cluster-wide, may", pr.Name, principal)
		}
		cr.Require = append(cr.Require, apiserver.Precondition{
			Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.UserCollection, "", u), Target: storage.CompareExists},
			Err:     apiserver.FieldError("spec.user", "user %q does not exist", u),
		})
	} else {
		principal = iamv1.ServiceAccountPrincipal(cr.Project, cr.Spec.ServiceAccount)
		cr.Require = append(cr.Require, apiserver.Precondition{
			Compare: storage.Compare{Key: apiserver.ObjectKey(iamv1.ServiceAccountCollection, cr.Project, cr.Spec.ServiceAccount), Target: storage.CompareExists},
			Err:     apiserver.FieldError("spec.serviceAccount", "service account %q does not exist in project %q", cr.Spec.ServiceAccount, cr.Project),
		})
	}
	id, err := newAccessKeyID()
	if err != nil {
		return err
	}
	secret, err := newAccessKeySecret()
	if err != nil {
		return err
	}
	sealed, err := c.sealer.Seal(accessKeyPrefix+id, []byte(secret))
	if err != nil {
		return err
	}
	rec, err := json.Marshal(accessKeyRecord{Project: cr.Project, Name: cr.Name, UID: cr.UID, Principal: principal, Secret: sealed})
	if err != nil {
		return fmt.Errorf("iam: encoding access key: %w", err)
	}
	cr.Ops = append(cr.Ops, storage.Op{Type: storage.OpPut, Key: []byte(accessKeyPrefix + id), Value: rec})
	cr.Require = append(cr.Require, apiserver.Precondition{
		Compare: storage.Compare{Key: []byte(accessKeyPrefix + id), Target: storage.CompareMissing},
		Err:     apiserver.Errorf(http.StatusConflict, api.CodeConflict, "access key ID collision; retry"),
	})
	cr.Status.AccessKeyID = id
	cr.ResponseStatus = &iamv1.AccessKeyStatus{AccessKeyID: id, SecretAccessKey: secret}
	return nil
}

// badAccessKey is the one answer to any wrong key ID or secret.
func badAccessKey() error {
	return apiserver.Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "invalid access key ID or secret, or the key is disabled")
}

// accessKeyPrincipal checks an access key ID and secret and returns the
// principal the key acts as, its UID, and the key ID.
func (c *Component) accessKeyPrincipal(ctx context.Context, id, secret string) (string, string, error) {
	if !validAccessKeyID(id) {
		return "", "", badAccessKey()
	}
	kv, err := c.store.Get(ctx, []byte(accessKeyPrefix+id))
	if errors.Is(err, storage.ErrNotFound) {
		return "", "", badAccessKey()
	}
	if err != nil {
		return "", "", err
	}
	var rec accessKeyRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return "", "", fmt.Errorf("iam: decoding access key %s: %w", id, err)
	}
	plain, err := c.sealer.Open(accessKeyPrefix+id, rec.Secret)
	if err != nil {
		return "", "", err
	}
	if subtle.ConstantTimeCompare(plain, []byte(secret)) != 1 {
		return "", "", badAccessKey()
	}
	obj, err := c.getObject(ctx, iamv1.AccessKeyCollection, rec.Project, rec.Name)
	if err != nil || obj.Metadata.UID != rec.UID {
		return "", "", badAccessKey()
	}
	if spec, ok := decodeSpec[iamv1.AccessKeySpec](obj); !ok || spec.Disabled {
		return "", "", badAccessKey()
	}
	uid, err := c.principalUID(ctx, rec.Principal)
	if err != nil {
		return "", "", badAccessKey()
	}
	return rec.Principal, uid, nil
}

// getObject reads one object of an iam kind straight from the store.
func (c *Component) getObject(ctx context.Context, coll, project, name string) (*api.Object, error) {
	kv, err := c.store.Get(ctx, apiserver.ObjectKey(coll, project, name))
	if err != nil {
		return nil, err
	}
	return apiserver.DecodeObject(kv)
}

// errPrincipalGone means a principal no longer exists or is disabled.
var errPrincipalGone = errors.New("iam: principal missing or disabled")

// principalUID returns the UID of an enabled user or service account, read
// from the store (not the policy mirror, which may lag).
func (c *Component) principalUID(ctx context.Context, principal string) (string, error) {
	p, err := iamv1.ParsePrincipal(principal)
	if err != nil {
		return "", err
	}
	var o *api.Object
	var disabled bool
	switch p.Kind {
	case iamv1.PrincipalUser:
		if o, err = c.getObject(ctx, iamv1.UserCollection, "", p.Name); err == nil {
			spec, _ := decodeSpec[iamv1.UserSpec](o)
			disabled = spec.Disabled
		}
	default:
		if o, err = c.getObject(ctx, iamv1.ServiceAccountCollection, p.Project, p.Name); err == nil {
			spec, _ := decodeSpec[iamv1.ServiceAccountSpec](o)
			disabled = spec.Disabled
		}
	}
	if errors.Is(err, storage.ErrNotFound) || (err == nil && disabled) {
		return "", errPrincipalGone
	}
	if err != nil {
		return "", err
	}
	return o.Metadata.UID, nil
}

// newPasswordID returns a random password record ID.
func newPasswordID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// currentPasswordID returns the ID of user's password record ("" if none).
func (c *Component) currentPasswordID(ctx context.Context, user string) (string, error) {
	rec, err := c.passwordRecord(ctx, user)
	if err != nil || rec == nil {
		return "", err
	}
	return rec.ID, nil
}
