// Package iamv1 holds the wire types of iam's resources and endpoints
// (version 1), shared by the iam component and SDK users: projects, users,
// service accounts, roles, role bindings, access keys, node credentials,
// tokens and audit records, plus the encoding helpers for principal names.
//
// It holds no behaviour beyond encoding and must never import internal/.
package iamv1

import "time"

// ProjectSpec is the desired state of a project.
type ProjectSpec struct {
	// DisplayName is a human-friendly name (at most 128 characters).
	DisplayName string `json:"displayName,omitempty"`
	// Description says what the project is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
}

// ProjectStatus is the observed state of a project.
type ProjectStatus struct {
	// Phase is Active or Terminating.
	Phase string `json:"phase,omitempty"`
}

// UserSpec is a person who logs in with a password. The password is set
// through POST /v1/users/{name}/password and stored only as an argon2id hash
// that the API never returns.
type UserSpec struct {
	// DisplayName is the user's name for people (at most 128 characters).
	DisplayName string `json:"displayName,omitempty"`
	// Email is the user's address (at most 254 characters).
	Email string `json:"email,omitempty"`
	// Disabled users cannot log in or refresh, and their tokens stop working.
	Disabled bool `json:"disabled,omitempty"`
}

// UserStatus is server-owned state of a user.
type UserStatus struct {
	// PasswordSet says whether the user has a password (and so can log in).
	PasswordSet bool `json:"passwordSet,omitempty"`
	// PasswordChangedAt is when the password was last set.
	PasswordChangedAt *time.Time `json:"passwordChangedAt,omitempty"`
}

// ServiceAccountSpec is a non-human principal that lives in a project and
// authenticates with access keys.
type ServiceAccountSpec struct {
	// DisplayName is a human-friendly name (at most 128 characters).
	DisplayName string `json:"displayName,omitempty"`
	// Description says what the account is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
	// Disabled accounts cannot exchange keys for tokens, and their tokens
	// stop working.
	Disabled bool `json:"disabled,omitempty"`
}

// ServiceAccountStatus is empty today.
type ServiceAccountStatus struct{}

// RoleSpec is a custom role: a list of permission patterns. A permission is
// `component.collection.verb` (e.g. `iam.projects.get`); each of the three
// parts is a name or `*`. A pattern starting with `!` removes what it
// matches; the last pattern that matches a permission decides.
type RoleSpec struct {
	// Description says what the role is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
	// Permissions are the patterns, evaluated last-match-wins (1 to 256).
	Permissions []string `json:"permissions"`
}

// RoleStatus is empty today.
type RoleStatus struct{}

// RoleBindingSpec grants a role to a principal: in the binding's project for
// a RoleBinding, everywhere for a ClusterRoleBinding.
type RoleBindingSpec struct {
	// Role names a built-in role (admin, member, viewer) or a custom Role.
	Role string `json:"role"`
	// Principal is "user:NAME" or "serviceaccount:PROJECT/NAME".
	Principal string `json:"principal"`
}

// RoleBindingStatus is empty today.
type RoleBindingStatus struct{}

// AccessKeySpec is an S3-style key (ID + secret) that acts as a user or a
// service account. Exactly one of User and ServiceAccount is set; neither
// can change after creation.
type AccessKeySpec struct {
	// User is the user the key acts as. Only that user, or someone allowed
	// to update users cluster-wide, may create it.
	User string `json:"user,omitempty"`
	// ServiceAccount is a service account in the key's project.
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Description says what the key is for (at most 1024 characters).
	Description string `json:"description,omitempty"`
	// Disabled keys are refused; tokens obtained with them stop working.
	Disabled bool `json:"disabled,omitempty"`
}

// AccessKeyStatus is server-owned state of an access key.
type AccessKeyStatus struct {
	// AccessKeyID identifies the key (like an AWS access key ID).
	AccessKeyID string `json:"accessKeyId,omitempty"`
	// SecretAccessKey is present only in the response that created the key;
	// it is stored encrypted and never returned again.
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
}

// NodeCredentialSpec is a node's identity (metadata.name is the node's
// name): a one-time join token, shown only in the create response, that
// the node exchanges once (POST /v1/auth/nodes/enroll) for a node key; the
// node then exchanges the key for access tokens as principal node:NAME,
// which holds the built-in node role. Deleting it revokes the node.
type NodeCredentialSpec struct {
	// JoinTokenTTL is how long the join token may be used (a Go duration,
	// 1m to 24h; default 1h). It matters only when the credential is
	// created.
	JoinTokenTTL string `json:"joinTokenTTL,omitempty"`
}

// NodeCredentialStatus is server-owned state of a node credential.
type NodeCredentialStatus struct {
	// Phase is Pending (the join token is unused) or Enrolled.
	Phase string `json:"phase,omitempty"`
	// JoinTokenExpiresAt is when the unused join token stops working
	// (cleared at enrollment).
	JoinTokenExpiresAt *time.Time `json:"joinTokenExpiresAt,omitempty"`
	// EnrolledAt is when the node exchanged its join token.
	EnrolledAt *time.Time `json:"enrolledAt,omitempty"`
	// JoinToken is present only in the response that created the
	// credential; it is stored only as its SHA-256 and never returned
	// again.
	JoinToken string `json:"joinToken,omitempty"`
}

// Phases of a node credential.
const (
	NodeCredentialPending  = "Pending"
	NodeCredentialEnrolled = "Enrolled"
)

// NodeEnrollRequest is the body of POST /v1/auth/nodes/enroll.
type NodeEnrollRequest struct {
	// Node is the node's name (the NodeCredential's name).
	Node string `json:"node"`
	// JoinToken is the credential's one-time join token.
	JoinToken string `json:"joinToken"`
}

// NodeEnrollResponse carries the node key, shown only in this response:
// the node keeps it (mode 0600) and exchanges it for access tokens with
// grant type node_key.
type NodeEnrollResponse struct {
	Node    string `json:"node"`
	NodeKey string `json:"nodeKey"`
	// Principal is who the node's tokens act as, "node:NAME".
	Principal string `json:"principal"`
}

// Collection and kind names of iam's resources.
const (
	ProjectKind                   = "Project"
	ProjectCollection             = "projects"
	UserKind                      = "User"
	UserCollection                = "users"
	ServiceAccountKind            = "ServiceAccount"
	ServiceAccountCollection      = "serviceaccounts"
	RoleKind                      = "Role"
	RoleCollection                = "roles"
	RoleBindingKind               = "RoleBinding"
	RoleBindingCollection         = "rolebindings"
	ClusterRoleBindingKind        = "ClusterRoleBinding"
	ClusterRoleBindingCollection  = "clusterrolebindings"
	AccessKeyKind                 = "AccessKey"
	AccessKeyCollection           = "accesskeys"
	NodeCredentialKind            = "NodeCredential"
	NodeCredentialCollection      = "nodecredentials"
	BuiltinRoleAdmin              = "admin"
	BuiltinRoleMember             = "member"
	BuiltinRoleViewer             = "viewer"
	DefaultAudience               = "ultracloud"
	GrantTypeRefreshToken         = "refresh_token"
	GrantTypeAccessKey            = "access_key"
	GrantTypeNodeKey              = "node_key"
	JoinTokenPrefix               = "ucj_"
	NodeKeyPrefix                 = "ucn_"
	TokenTypeBearer               = "Bearer"
	PasswordMinLength             = 12
	PasswordMaxLength             = 256
	AuditDefaultLimit             = 200
	AuditMaxLimit                 = 5000
	WellKnownOpenIDConfiguration  = "/.well-known/openid-configuration"
	JWKSPath                      = "/v1/auth/jwks"
	LoginPath                     = "/v1/auth/login"
	TokenPath                     = "/v1/auth/token"
	LogoutPath                    = "/v1/auth/logout"
	WhoAmIPath                    = "/v1/auth/whoami"
	RotateSigningKeyPath          = "/v1/auth/signing-keys/rotate"
	NodeEnrollPath                = "/v1/auth/nodes/enroll"
	AuditPath                     = "/v1/audit"
	PasswordSubresource           = "password"
	AuditVerbLogin                = "login"
	AuditVerbToken                = "token"
	AuditVerbLogout               = "logout"
	AuditVerbSetPassword          = "setpassword"
	AuditVerbRotateSigningKey     = "rotatesigningkey"
	AuditVerbEnroll               = "enroll"
	PermissionRotateSigningKey    = "iam.signingkeys.update"
	PermissionAuditList           = "iam.audit.list"
	PermissionNodeStatus          = "node.status.get"
	PermissionSetPassword         = "iam.users.setpassword"
	PermissionCreateUserAccessKey = "iam.users.update"
)

// LoginRequest is the body of POST /v1/auth/login.
type LoginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// TokenRequest is the body of POST /v1/auth/token. GrantType is
// "refresh_token" (with RefreshToken), "access_key" (with AccessKeyID and
// SecretAccessKey) or "node_key" (with Node and NodeKey); the last two
// issue no refresh token: exchange the key again.
type TokenRequest struct {
	GrantType       string `json:"grantType"`
	RefreshToken    string `json:"refreshToken,omitempty"`
	AccessKeyID     string `json:"accessKeyId,omitempty"`
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
	Node            string `json:"node,omitempty"`
	NodeKey         string `json:"nodeKey,omitempty"`
}

// LogoutRequest is the body of POST /v1/auth/logout: the refresh token to
// revoke.
type LogoutRequest struct {
	RefreshToken string `json:"refreshToken"`
}

// TokenResponse carries a signed access token (a JWT) and, for logins and
// refreshes, a new refresh token. Refresh tokens rotate: each use returns a
// new one and the old one stops working shortly after.
type TokenResponse struct {
	AccessToken      string     `json:"accessToken"`
	TokenType        string     `json:"tokenType"`
	ExpiresIn        int64      `json:"expiresIn"`
	ExpiresAt        time.Time  `json:"expiresAt"`
	RefreshToken     string     `json:"refreshToken,omitempty"`
	RefreshExpiresAt *time.Time `json:"refreshExpiresAt,omitempty"`
	// Principal is who the token acts as, e.g. "user:alice".
	Principal string `json:"principal"`
}

// SetPasswordRequest is the body of POST /v1/users/{name}/password. A user
// changing their own password sends CurrentPassword; an administrator
// allowed iam.users.setpassword need not.
type SetPasswordRequest struct {
	Password        string `json:"password"`
	CurrentPassword string `json:"currentPassword,omitempty"`
}

// WhoAmI describes the caller (GET /v1/auth/whoami).
type WhoAmI struct {
	Principal string    `json:"principal"`
	Superuser bool      `json:"superuser,omitempty"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
	// ClusterRoles are the roles bound cluster-wide.
	ClusterRoles []string `json:"clusterRoles,omitempty"`
	// ProjectRoles maps project to the roles bound there.
	ProjectRoles map[string][]string `json:"projectRoles,omitempty"`
}

// AuditRecord is one mutating request as the audit log keeps it.
type AuditRecord struct {
	// ID orders records by time; pass it back as `after` to page.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Principal is who made the request ("" when unauthenticated; for
	// logins the user name that was tried, as "user:NAME").
	Principal string `json:"principal,omitempty"`
	// Verb is create, update, updatestatus, delete, login, token, ...
	Verb       string `json:"verb"`
	Method     string `json:"method"`
	Path       string `json:"path"`
	Component  string `json:"component,omitempty"`
	Collection string `json:"collection,omitempty"`
	Project    string `json:"project,omitempty"`
	Name       string `json:"name,omitempty"`
	// Code is the HTTP status of the response.
	Code      int    `json:"code"`
	RequestID string `json:"requestId,omitempty"`
	SourceIP  string `json:"sourceIP,omitempty"`
	Node      string `json:"node,omitempty"`
}

// AuditList is a page of audit records, oldest first. Continue, when set,
// is passed back as `continue` for the next page.
type AuditList struct {
	Items    []AuditRecord `json:"items"`
	Continue string        `json:"continue,omitempty"`
}
