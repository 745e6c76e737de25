// Package errdefs holds Cube's error classes. Code anywhere wraps them with
// fmt.Errorf("...: %w", errdefs.ErrNotFound) and tests them with errors.Is;
// only the API edge maps them to HTTP status codes.
package errdefs

import "errors"

var (
	ErrNotFound      = errors.New("not found")
	ErrAlreadyExists = errors.New("already exists")
	ErrInvalid       = errors.New("invalid argument")
	ErrConflict      = errors.New("conflict")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrForbidden     = errors.New("forbidden")
	ErrQuotaExceeded = errors.New("quota exceeded")
	ErrTimeout       = errors.New("timeout")
	ErrUnavailable   = errors.New("unavailable")
	// ErrExpired: what the request refers to is gone for good (a list
	// snapshot etcd compacted away); start over.
	ErrExpired = errors.New("expired")
)
