package apiserver

import (
	"errors"
	"strings"
	"testing"

	"github.com/ultracloud/ultracloud/pkg/api/iamv1"
)

// FuzzDecodeStrict feeds arbitrary bodies to the strict decoder: it must
// never panic, and every failure must be an *Error with a 4xx status.
func FuzzDecodeStrict(f *testing.F) {
	for _, s := range []string{
		`{"kind":"Project","metadata":{"name":"a"},"spec":{"displayName":"x"}}`,
		`{"metadata":{"name":"a","labels":{"k":"v"}},"spec":{}}`,
		`{"spec":{"nope":1}}`, `{"metadata":{"revision":"x"}}`, `{} {}`, `[`, ``, `null`, `"str"`,
		`{"metadata":{"createdAt":"2020-13-45"}}`, `{"spec":{"displayName":12}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var o wireObject[iamv1.ProjectSpec, iamv1.ProjectStatus]
		err := DecodeStrict(body, &o)
		if err == nil {
			return
		}
		var ae *Error
		if !errors.As(err, &ae) || ae.Status < 400 || ae.Status >= 500 || ae.Code == "" {
			t.Fatalf("DecodeStrict(%q) = %#v, want a 4xx *Error", body, err)
		}
	})
}

// FuzzContinueToken: arbitrary tokens never panic; accepted ones decode to
// valid positions that re-encode to an equivalent token.
func FuzzContinueToken(f *testing.F) {
	f.Add(encodeContinue("web-1"), false)
	f.Add(encodeContinue("proj/web-1"), true)
	f.Add("", false)
	f.Add("eyJ2IjoxLCJrIjoiLi4vLi4vZXRjIn0", false)
	f.Add("!!!", true)
	f.Fuzz(func(t *testing.T, tok string, cross bool) {
		pos, err := decodeContinue(tok, cross)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Code != "invalid_continue" {
				t.Fatalf("decodeContinue(%q) error %v is not invalid_continue", tok, err)
			}
			return
		}
		if strings.ContainsAny(pos, "\x00\xff") || pos == "" {
			t.Fatalf("decodeContinue(%q) accepted position %q", tok, pos)
		}
		again, err := decodeContinue(encodeContinue(pos), cross)
		if err != nil || again != pos {
			t.Fatalf("round trip of %q: %q, %v", pos, again, err)
		}
	})
}

func TestValidateName(t *testing.T) {
	good := []string{"a", "web-1", "0", strings.Repeat("a", 63)}
	bad := []string{"", "-a", "a-", "A", "a_b", "a.b", "a/b", strings.Repeat("a", 64), "ä"}
	for _, n := range good {
		if err := ValidateName("metadata.name", n); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	for _, n := range bad {
		if err := ValidateName("metadata.name", n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}
