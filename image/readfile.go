package image

import "errors"

// ErrFileTooLarge: a file read out of an image is over the caller's cap.
var ErrFileTooLarge = errors.New("file is too large")

// ErrNotRegular: a file read out of an image is not a regular file (a
// FIFO, device, socket or directory), so it is not read at all.
var ErrNotRegular = errors.New("not a regular file")
