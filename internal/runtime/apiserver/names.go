package apiserver

import (
	"fmt"
	"net/http"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// ValidateName checks that name is an RFC 1123 DNS label: 1 to 63 characters,
// lower-case letters, digits and '-', starting and ending with a letter or
// digit. what names the field in the error ("metadata.name").
func ValidateName(what, name string) error {
	bad := func(why string) error {
		return &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidName, Field: what,
			Detail: fmt.Sprintf("%q is not a valid name: %s (use lower-case letters, digits and '-', at most 63, e.g. \"web-1\")", name, why)}
	}
	if name == "" {
		return bad("it is empty")
	}
	if len(name) > 63 {
		return bad(fmt.Sprintf("it is %d characters long", len(name)))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(name)-1 {
				return bad("it starts or ends with '-'")
			}
		default:
			return bad(fmt.Sprintf("character %q is not allowed", c))
		}
	}
	return nil
}
