package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"sort"
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
		de := decodeError(err)
		if de.Code == api.CodeUnknownField {
			// encoding/json names only the leaf; find the full path.
			if path, ok := unknownFieldPath(body, reflect.TypeOf(dst), ""); ok {
				de.Field = path
				de.Detail = fmt.Sprintf("unknown field %q (check the spelling against /openapi.json)", path)
			}
		}
		return de
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

var rawMessageType = reflect.TypeFor[json.RawMessage]()

// unknownFieldPath finds the first (in sorted key order) JSON object key in
// raw that type t has no field for, and returns its dotted path.
func unknownFieldPath(raw []byte, t reflect.Type, path string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch {
	case t == rawMessageType || t.Kind() == reflect.Interface:
		return "", false
	case t.Kind() == reflect.Struct:
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return "", false
		}
		fields := map[string]reflect.Type{}
		collectJSONFields(t, fields)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				ft, ok = fields[strings.ToLower(k)] // encoding/json matches case-insensitively
			}
			if !ok {
				return join(k), true
			}
			if p, found := unknownFieldPath(m[k], ft, join(k)); found {
				return p, true
			}
		}
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil {
			return "", false
		}
		for i, el := range arr {
			if p, found := unknownFieldPath(el, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); found {
				return p, true
			}
		}
	case t.Kind() == reflect.Map:
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return "", false
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, found := unknownFieldPath(m[k], t.Elem(), join(k)); found {
				return p, true
			}
		}
	}
	return "", false
}

// collectJSONFields maps the JSON names of t's fields (exact and lower-case)
// to their types, descending into embedded structs as encoding/json does.
func collectJSONFields(t reflect.Type, out map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" && tag == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectJSONFields(ft, out)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
		if _, ok := out[strings.ToLower(name)]; !ok {
			out[strings.ToLower(name)] = f.Type
		}
	}
}
