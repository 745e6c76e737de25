package agentapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cube-platform/cube/errdefs"
)

var classes = []struct {
	err  error
	code codes.Code
}{
	{errdefs.ErrInvalid, codes.InvalidArgument},
	{errdefs.ErrNotFound, codes.NotFound},
	{errdefs.ErrAlreadyExists, codes.AlreadyExists},
	{errdefs.ErrConflict, codes.FailedPrecondition},
	{errdefs.ErrForbidden, codes.PermissionDenied},
	{errdefs.ErrQuotaExceeded, codes.ResourceExhausted},
	{errdefs.ErrTimeout, codes.DeadlineExceeded},
	{errdefs.ErrUnavailable, codes.Unavailable},
}

// ToStatus turns an agent error into the ttRPC status the wire carries,
// its errdefs class as the code. The agent's server interceptor calls it.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromStatus turns what the client got back into an error of an errdefs
// class. The guest wrote the message: it is clipped and made printable
// before anyone logs it.
func fromStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("agent %s: %w: %w", op, errdefs.ErrTimeout, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("agent %s: %w", op, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("agent %s: %w: %s", op, errdefs.ErrUnavailable, sanitize(err.Error()))
	}
	msg := sanitize(st.Message())
	for _, c := range classes {
		if st.Code() == c.code {
			return fmt.Errorf("agent %s: %w: %s", op, c.err, strings.TrimPrefix(msg, c.err.Error()+": "))
		}
	}
	return fmt.Errorf("agent %s: %s (code %d)", op, msg, uint32(st.Code()))
}

// sanitize bounds a guest-written string and replaces what a terminal or
// a log line could misread.
func sanitize(s string) string {
	if len(s) > MaxErrorBytes {
		s = s[:MaxErrorBytes] + "..."
	}
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return '?'
	}, s)
}
