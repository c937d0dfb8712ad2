package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// DefaultMaxBody is the request body limit unless a kind sets its own.
const DefaultMaxBody = 1 << 20

// DecodeJSON reads r's body into dst strictly: the content type must be JSON,
// the body at most maxBytes, every field known to dst, and exactly one JSON
// value. Errors are *Error values that name the problem (and the field when
// there is one).
func DecodeJSON(r *http.Request, dst any, maxBytes int64) error {
	body, err := ReadBody(r, maxBytes)
	if err != nil {
		return err
	}
	return DecodeStrict(body, dst)
}

// ReadBody checks that r's content type is JSON and reads at most maxBytes of
// body; it does not parse it.
func ReadBody(r *http.Request, maxBytes int64) ([]byte, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, &Error{Status: http.StatusUnsupportedMediaType, Code: api.CodeUnsupportedMedia,
			Detail: fmt.Sprintf("Content-Type %q is not supported; send application/json", ct)}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: "reading request body: " + err.Error(), Err: err}
	}
	if int64(len(body)) > maxBytes {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: api.CodeBodyTooLarge,
			Detail: fmt.Sprintf("request body exceeds the %d-byte limit", maxBytes)}
	}
	return body, nil
}

// DecodeStrict decodes one JSON value from body into dst, rejecting unknown
// fields, trailing data and type mismatches with an *Error naming the field.
func DecodeStrict(body []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: "request body has data after the JSON value"}
	}
	return nil
}

func decodeError(err error) *Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: "request body is empty; send a JSON object"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: "request body is truncated JSON"}
	case errors.As(err, &syn):
		return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn)}
	case errors.As(err, &typ):
		field := typ.Field
		return &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidField, Field: field,
			Detail: fmt.Sprintf("field %q must be %s, not JSON %s", field, typeName(typ.Type.String()), typ.Value)}
	}
	// encoding/json reports unknown fields only as text; this is the one
	// place we read it, and it is our own decoder, not a remote error.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &Error{Status: http.StatusBadRequest, Code: api.CodeUnknownField, Field: name,
			Detail: fmt.Sprintf("unknown field %q (check the spelling against /openapi.json)", name)}
	}
	return &Error{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Detail: "invalid JSON: " + err.Error()}
}

func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "a boolean"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	case strings.HasPrefix(t, "map["):
		return "an object"
	}
	return "a " + t
}
