package metadata

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzVerifyToken: no input panics, and only a token issued to this
// instance by this key, unexpired, is accepted.
func FuzzVerifyToken(f *testing.F) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	good := issueToken(key, "vm-1", now.Add(time.Hour))
	f.Add(good, "vm-1")
	f.Add(good, "vm-2")
	f.Add(good[:len(good)-1]+"B", "vm-1")
	f.Add("", "")
	f.Add(strings.Repeat("A", 54), "vm-1")
	f.Add(strings.Repeat("_", 54), "vm-1")
	f.Fuzz(func(t *testing.T, tok, id string) {
		err := verifyToken(key, id, tok, now)
		if err == nil && !(tok == good && id == "vm-1") {
			t.Fatalf("accepted a token that was never issued: %q for %q", tok, id)
		}
	})
}

// FuzzParseTTL: accepted values are exactly the decimal numbers 1..21600.
func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"1", "21600", "21601", "0", "", "+5", "-5", "1e3", "٣", "00060", " 6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseTTL(s)
		if err != nil {
			return
		}
		n := int(d / time.Second)
		if n < 1 || n > MaxTokenTTL || d%time.Second != 0 {
			t.Fatalf("parseTTL(%q) = %v", s, d)
		}
		for _, r := range s {
			if r < '0' || r > '9' {
				t.Fatalf("parseTTL(%q) accepted a non-digit", s)
			}
		}
	})
}

// FuzzHandlerPaths: any method and path gets one of the statuses the
// handler documents, never a panic, and a 200 only for GET/HEAD or the
// token PUT.
func FuzzHandlerPaths(f *testing.F) {
	for _, p := range []string{"/", "/latest/meta-data/", "/latest/meta-data/public-keys/0/openssh-key",
		"/openstack/latest/meta_data.json", "/latest//x", "/../", "/latest/api/token", "/openstack/latest/user_data/"} {
		f.Add("GET", p)
	}
	f.Add("PUT", "/latest/api/token")
	f.Add("POST", "/latest/meta-data/")
	h := Handler(fixed(testInstance()))
	f.Fuzz(func(t *testing.T, method, path string) {
		if !validMethod(method) {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "http://169.254.169.254/", nil)
		r.Method = method
		r.URL.Path = path
		r.Header.Set(HeaderTokenTTL, "60")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case 200:
			if method != "GET" && method != "HEAD" && !(method == "PUT" && path == tokenPath) {
				t.Fatalf("%s %q answered 200", method, path)
			}
		case 404, 405:
		default:
			t.Fatalf("%s %q answered %d", method, path, w.Code)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, r := range m {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}
