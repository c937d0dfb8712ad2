package client

import (
	"errors"

	"github.com/ultracloud/ultracloud/pkg/api"
)

// ProblemOf returns the *api.Problem inside err, if any.
func ProblemOf(err error) (*api.Problem, bool) {
	var p *api.Problem
	ok := errors.As(err, &p)
	return p, ok
}

// HasCode reports whether err is a problem with the given stable code.
func HasCode(err error, code string) bool {
	p, ok := ProblemOf(err)
	return ok && p.Code == code
}

// IsNotFound reports a 404 not_found problem.
func IsNotFound(err error) bool { return HasCode(err, api.CodeNotFound) }

// IsConflict reports a stale-revision 409.
func IsConflict(err error) bool { return HasCode(err, api.CodeConflict) }

// IsAlreadyExists reports a create of a name that exists.
func IsAlreadyExists(err error) bool { return HasCode(err, api.CodeAlreadyExists) }

// IsCompacted reports that a watch's history is gone: list again and watch
// from the list's revision.
func IsCompacted(err error) bool { return HasCode(err, api.CodeRevisionCompacted) }
