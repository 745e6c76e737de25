package apiserver

import (
	"encoding/json"
	"errors"
	"net/http"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image"
)

// httpError maps an error class to a status and code; this is the only
// place that knows HTTP statuses for errors.
func httpError(err error) (int, v1.ErrorDetail) {
	var fe *v1.FieldError
	switch {
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
