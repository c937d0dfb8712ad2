package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// The loader works on any struct whose fields carry yaml tags: the node's
// aggregate config (internal/node), or a test's. A field tagged
// `yaml:",inline"` contributes its fields at its parent's level; a field
// tagged `yaml:"-"` is not configuration.

// LoadFile merges the YAML file at path over dst (a pointer to a struct).
// Unknown keys are errors that name the key and its line.
func LoadFile(dst any, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: reading %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config: %s: %w (see docs/configuration.md for the fields)", path, err)
	}
	return nil
}

// EnvPrefix prefixes every environment variable the config reads.
const EnvPrefix = "ULTRACLOUD_"

// EnvName returns the environment variable for a dotted field path, e.g.
// "api.listen" -> ULTRACLOUD_API_LISTEN, "dataDir" -> ULTRACLOUD_DATA_DIR.
func EnvName(path string) string {
	var b strings.Builder
	b.WriteString(EnvPrefix)
	upper := func(c byte) bool { return c >= 'A' && c <= 'Z' }
	lower := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '.' || c == '-':
			b.WriteByte('_')
		case upper(c):
			// A word starts at an upper-case letter after a lower-case one,
			// or at the last letter of an acronym that precedes a word:
			// clusterID -> CLUSTER_ID, apiAddress -> API_ADDRESS,
			// clientURL -> CLIENT_URL, caFile -> CA_FILE.
			if i > 0 && (lower(path[i-1]) || upper(path[i-1]) && i+1 < len(path) && lower(path[i+1]) && path[i+1] > '9') {
				b.WriteByte('_')
			}
			b.WriteByte(c)
		default:
			b.WriteString(strings.ToUpper(string(c)))
		}
	}
	return b.String()
}

// Field is one settable leaf of a config struct.
type Field struct {
	// Path is the dotted path ("flaredb.tls.auto").
	Path string
	// Struct and Index locate the Go field, for documentation tools.
	Struct reflect.Type
	Index  int
	value  reflect.Value
}

// Fields returns every settable leaf of the struct dst points to, in
// declaration order.
func Fields(dst any) []Field {
	var out []Field
	walk(reflect.ValueOf(dst).Elem(), "", func(f Field) { out = append(out, f) })
	return out
}

// walk calls fn for every leaf field under v. Structs other than
// time.Duration are descended into; everything else is a leaf.
func walk(v reflect.Value, prefix string, fn func(Field)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		fv := v.Field(i)
		if name == "" && strings.Contains(opts, "inline") && fv.Kind() == reflect.Struct {
			walk(fv, prefix, fn)
			continue
		}
		if name == "" || name == "-" {
			continue
		}
		path := join(prefix, name)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeFor[time.Duration]() {
			walk(fv, path, fn)
			continue
		}
		fn(Field{Path: path, Struct: t, Index: i, value: fv})
	}
}

// LoadEnv merges environment variables over dst, one per field
// (EnvName of its path); lookup is os.LookupEnv in production and a map in
// tests.
func LoadEnv(dst any, lookup func(string) (string, bool)) error {
	var errs []error
	walk(reflect.ValueOf(dst).Elem(), "", func(f Field) {
		name := EnvName(f.Path)
		s, ok := lookup(name)
		if !ok {
			return
		}
		if err := setField(f.value, s); err != nil {
			errs = append(errs, &FieldError{Path: f.Path, Problem: fmt.Sprintf("environment %s: %v", name, err)})
		}
	})
	return errors.Join(errs...)
}

// Set sets the field at a dotted path from a string (used for flags).
func Set(dst any, path, value string) error {
	var found bool
	var err error
	walk(reflect.ValueOf(dst).Elem(), "", func(f Field) {
		if f.Path == path {
			found = true
			err = setField(f.value, value)
		}
	})
	if !found {
		return fmt.Errorf("config: no field %q", path)
	}
	if err != nil {
		return &FieldError{Path: path, Problem: err.Error()}
	}
	return nil
}

func setField(fv reflect.Value, s string) error {
	switch {
	case fv.Type() == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", s)
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(s)
	case fv.Kind() == reflect.Int, fv.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		fv.SetInt(n)
	case fv.Kind() == reflect.Uint, fv.Kind() == reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a non-negative integer", s)
		}
		fv.SetUint(n)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		fv.SetBool(b)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment or a flag (type %s): set it in node.yaml", fv.Type())
	}
	return nil
}
