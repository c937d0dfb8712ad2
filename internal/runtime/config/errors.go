package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one field: Path is its dotted path
// ("api.listen", "flaredb.initialVoters[0].id"), relative to the section
// that reported it until Within adds the section's name. Every config error
// the node prints has the one form "config: <path>: <problem>".
type FieldError struct {
	Path    string
	Problem string
	// Err, if set, is a sentinel the error unwraps to (e.g. a component's
	// ErrInvalidConfig), so callers can test for it with errors.Is.
	Err error
	// Absolute marks a path that is already a full node.yaml path: a
	// section's check of a core field it depends on (storage.endpoints).
	Absolute bool
}

func (e *FieldError) Error() string { return "config: " + e.Path + ": " + e.Problem }

// Unwrap returns the sentinel, if any.
func (e *FieldError) Unwrap() error { return e.Err }

// Problems collects field errors during validation.
type Problems struct {
	// Sentinel, if set, is what every collected FieldError unwraps to.
	Sentinel error
	errs     []error
}

// Add records a problem with the field at path.
func (p *Problems) Add(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Problem: fmt.Sprintf(format, args...), Err: p.Sentinel})
}

// AddAbsolute records a problem with a field outside the section, at its
// full node.yaml path, which Within leaves as it is.
func (p *Problems) AddAbsolute(path, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Path: path, Problem: fmt.Sprintf(format, args...), Err: p.Sentinel, Absolute: true})
}

// AddErr records err, a check's result, as a problem with the field at
// path; a nil err records nothing.
func (p *Problems) AddErr(path string, err error) {
	if err != nil {
		p.Add(path, "%s", err.Error())
	}
}

// Include records every field error of err (e.g. a sub-section's Validate
// result) under prefix.
func (p *Problems) Include(prefix string, err error) {
	if err != nil {
		p.errs = append(p.errs, Within(prefix, err))
	}
}

// Err returns the collected problems joined, or nil.
func (p *Problems) Err() error { return errors.Join(p.errs...) }

// Within returns err with section prepended to the path of every
// FieldError in it ("name" in section "chainfire" becomes
// "chainfire.name"). Any other error becomes a FieldError of the section
// itself, so the node prints every problem in one form.
func Within(section string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			if fe.Absolute {
				out = append(out, fe)
				continue
			}
			c := *fe
			c.Path = join(section, fe.Path)
			out = append(out, &c)
			continue
		}
		out = append(out, &FieldError{Path: section, Problem: e.Error()})
	}
	return errors.Join(out...)
}

// flatten returns the leaves of a tree of errors.Join results.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// join appends a relative field path to a prefix: "a" + "b" is "a.b",
// "a" + "[0].b" is "a[0].b", and an empty side leaves the other.
func join(prefix, path string) string {
	switch {
	case prefix == "":
		return path
	case path == "":
		return prefix
	case strings.HasPrefix(path, "["):
		return prefix + path
	}
	return prefix + "." + path
}
