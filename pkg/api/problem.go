package api

import "fmt"

// ProblemContentType is the media type of error responses (RFC 9457).
const ProblemContentType = "application/problem+json"

// Problem is an RFC 9457 problem details document. Code is stable and meant
// for programs; Title and Detail are for people.
type Problem struct {
	Type   string `json:"type,omitempty"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Code is a stable machine-readable error code, e.g. "conflict".
	Code string `json:"code"`
	// Field names the offending input field for validation errors.
	Field string `json:"field,omitempty"`
	// Instance is the request path; RequestID correlates with server logs.
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"requestId,omitempty"`
}

// Error makes a Problem usable as a Go error.
func (p *Problem) Error() string {
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	if p.Field != "" {
		msg = p.Field + ": " + msg
	}
	return fmt.Sprintf("%s [%s, HTTP %d]", msg, p.Code, p.Status)
}

// Stable problem codes. Clients switch on these, never on text.
const (
	CodeBadRequest        = "bad_request"
	CodeInvalidField      = "invalid_field"
	CodeUnknownField      = "unknown_field"
	CodeInvalidName       = "invalid_name"
	CodeInvalidContinue   = "invalid_continue"
	CodeInvalidSelector   = "invalid_selector"
	CodeUnauthenticated   = "unauthenticated"
	CodeForbidden         = "forbidden"
	CodeNotFound          = "not_found"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeAlreadyExists     = "already_exists"
	CodeConflict          = "conflict"
	CodeRevisionCompacted = "revision_compacted"
	CodeBodyTooLarge      = "body_too_large"
	CodeUnsupportedMedia  = "unsupported_media_type"
	CodeUnprocessable     = "unprocessable"
	CodeTooManyRequests   = "too_many_requests"
	CodeInternal          = "internal"
	CodeUnavailable       = "unavailable"
)
