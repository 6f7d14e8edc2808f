// Package rlslab holds what every part of rlslab shares: the error type that
// the web layer maps to HTTP statuses and the command line to exit codes.
package rlslab

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in web.ErrorStatus.
const (
	EINVALID     = "invalid"     // bad input: 400
	ENOTFOUND    = "not_found"   // unknown lab, lesson, scenario: 404
	ECONFLICT    = "conflict"    // a run is already going: 409
	EFORBIDDEN   = "forbidden"   // not the lab's owner, foreign origin: 403
	EUNAVAILABLE = "unavailable" // the lab cap is reached, a dependency is missing: 503
	ETOOMANY     = "too_many"    // too many failed tries (join codes) from one client: 429
	EPREPARING   = "preparing"   // the lab asked for is still being made: 202, ask again
	EINTERNAL    = "internal"    // everything else: 500
)

// Error is an error with a code and a message meant for the user.
type Error struct {
	Code    string
	Message string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err: the message of its
// *Error, or "internal error" for any other error.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
