package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// httpError maps an error class to a status and code; this is the only
// place that knows HTTP statuses for errors.
func httpError(err error) (int, v1.ErrorDetail) {
	var fe *v1.FieldError
	var cfe *classedFieldError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &cfe):
		status, d := httpError(cfe.class)
		d.Message, d.Field = cfe.Error(), cfe.field
		return status, d
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, v1.ErrorDetail{Code: "TooLarge", Message: fmt.Sprintf(
			"request body is larger than this endpoint's limit of %s: send a smaller one (for an instance: fewer or shorter env vars, args and labels)", byteSize(tooLarge.Limit))}
	case isNoSpace(err):
		return http.StatusServiceUnavailable, v1.ErrorDetail{Code: "Unavailable", Message: noSpaceMessage}
	case errors.As(err, &fe):
		return http.StatusUnprocessableEntity, v1.ErrorDetail{Code: "InvalidArgument", Message: fe.Error(), Field: fe.Field}
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, image.ErrInvalidReference),
		errors.Is(err, image.ErrUnsafeLayer), errors.Is(err, image.ErrInvalidArchive):
		return http.StatusBadRequest, v1.ErrorDetail{Code: "InvalidArgument", Message: err.Error()}
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, image.ErrNotFound):
		return http.StatusNotFound, v1.ErrorDetail{Code: "NotFound", Message: err.Error()}
	case errors.Is(err, errdefs.ErrAlreadyExists):
		return http.StatusConflict, v1.ErrorDetail{Code: "AlreadyExists", Message: err.Error()}
	case errors.Is(err, errdefs.ErrConflict):
		return http.StatusConflict, v1.ErrorDetail{Code: "Conflict", Message: err.Error()}
	case errors.Is(err, errdefs.ErrUnauthorized):
		return http.StatusUnauthorized, v1.ErrorDetail{Code: "Unauthorized", Message: err.Error()}
	case errors.Is(err, errdefs.ErrForbidden):
		return http.StatusForbidden, v1.ErrorDetail{Code: "Forbidden", Message: err.Error()}
	case errors.Is(err, errdefs.ErrQuotaExceeded):
		return http.StatusTooManyRequests, v1.ErrorDetail{Code: "QuotaExceeded", Message: err.Error()}
	case errors.Is(err, errdefs.ErrTimeout):
		return http.StatusRequestTimeout, v1.ErrorDetail{Code: "Timeout", Message: err.Error()}
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, v1.ErrorDetail{Code: "Unavailable", Message: err.Error()}
	case errors.Is(err, errdefs.ErrExpired):
		return http.StatusGone, v1.ErrorDetail{Code: "Expired", Message: err.Error()}
	}
	return http.StatusInternalServerError, v1.ErrorDetail{Code: "Internal", Message: err.Error()}
}

func writeError(w http.ResponseWriter, err error) {
	status, d := httpError(err)
	writeJSON(w, status, v1.ErrorBody{Error: d})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// classedFieldError is a refusal of one field with a class other than
// invalid (a missing grant is 403, not 422), so the answer still names
// the field.
type classedFieldError struct {
	class  error
	field  string
	reason string
}

func (e *classedFieldError) Error() string { return e.field + ": " + e.reason }
func (e *classedFieldError) Unwrap() error { return e.class }

func fieldErr(class error, field, format string, args ...any) error {
	return &classedFieldError{class: class, field: field, reason: fmt.Sprintf(format, args...)}
}

// noSpaceMessage is what a write gets while etcd's NOSPACE alarm is raised:
// etcd refuses every write until the operator makes room.
const noSpaceMessage = "the state store is full (etcd raised its NOSPACE alarm: database space exceeded); " +
	"reads still work, writes are refused until the operator frees space: delete finished instances, " +
	"then `etcdctl compact`, `etcdctl defrag` and `etcdctl alarm disarm`, or restart etcd with a larger --quota-backend-bytes"

// isNoSpace recognizes etcd's rpctypes.ErrNoSpace. The store wraps etcd's
// errors by text (%v), so the text is what is left to match.
func isNoSpace(err error) bool {
	return errors.Is(err, rpctypes.ErrNoSpace) || errors.Is(err, rpctypes.ErrGRPCNoSpace) ||
		strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error())
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
