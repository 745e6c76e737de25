//go:build !linux

package logfile

import "context"

type dirWatch struct{ ch chan struct{} }

func watchDir(context.Context, string) *dirWatch { return nil }
