package apiserver

import (
	"context"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// Principal is who a request acts as.
type Principal struct {
	Name string
}

// Authenticator establishes the principal of a request, or fails with an
// *Error (401). iam supplies the real one; TokenAuthenticator is the
// bootstrap one used until then.
type Authenticator interface {
	Authenticate(r *http.Request) (Principal, error)
}

type principalKey struct{}

// PrincipalFrom returns the authenticated principal of ctx.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Authenticated wraps h so it runs only for authenticated requests.
func (a *API) Authenticated(h http.HandlerFunc) http.Handler {
	if a.opts.Authenticator == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.opts.Authenticator.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ultracloud"`)
			a.fail(w, r, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// TokenAuthenticator accepts one static bearer token (the node's bootstrap
// admin token) and names its holder "admin".
type TokenAuthenticator struct {
	Token string
}

// Authenticate implements Authenticator in constant time.
func (t TokenAuthenticator) Authenticate(r *http.Request) (Principal, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return Principal{}, Errorf(http.StatusUnauthorized, api.CodeUnauthenticated,
			"missing bearer token: pass --token, set ULTRACLOUD_TOKEN, or use the client config written by `ultracloud up`")
	}
	if t.Token == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(t.Token)) != 1 {
		return Principal{}, Errorf(http.StatusUnauthorized, api.CodeUnauthenticated, "the bearer token is not valid for this cluster")
	}
	return Principal{Name: "admin"}, nil
}
