package apiserver

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// continueToken is the decoded form of a list's opaque continue token: the
// position (relative to the collection's key prefix) of the last item the
// previous page covered. Pages resume strictly after it, so an item present
// for the whole listing appears exactly once, whatever writes happen between
// pages.
type continueToken struct {
	V int    `json:"v"`
	K string `json:"k"`
}

const continueVersion = 1

func encodeContinue(rel string) string {
	b, _ := json.Marshal(continueToken{V: continueVersion, K: rel})
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeContinue parses a continue token. A position is one or two DNS labels
// joined by '/' ("name" or "project/name"); crossProject says which one this
// list expects.
func decodeContinue(tok string, crossProject bool) (string, error) {
	bad := func(why string) error {
		return &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidContinue, Field: "continue",
			Detail: "continue token is invalid (" + why + "); pass back the token from the previous page unchanged, or list from the start"}
	}
	if len(tok) > 512 {
		return "", bad("too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", bad("not base64url")
	}
	var t continueToken
	if err := DecodeStrict(raw, &t); err != nil {
		return "", bad("not a token")
	}
	if t.V != continueVersion {
		return "", bad("unknown version")
	}
	parts := strings.Split(t.K, "/")
	want := 1
	if crossProject {
		want = 2
	}
	if len(parts) != want {
		return "", bad("position does not belong to this list")
	}
	for _, p := range parts {
		if ValidateName("continue", p) != nil {
			return "", bad("bad position")
		}
	}
	return t.K, nil
}
