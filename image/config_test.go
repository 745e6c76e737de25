package image

import (
	"path/filepath"
	"testing"

	"github.com/cube-platform/cube/image/imagetest"
)

// TestImportRuntimeConfig: an image config may not carry NUL bytes or a
// working directory that is relative, unclean or in /proc.
func TestImportRuntimeConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  imagetest.Option
		want string
	}{
		{"proc workdir", imagetest.WithWorkingDir("/proc/self/cwd"), "in /proc"},
		{"proc itself", imagetest.WithWorkingDir("/proc"), "in /proc"},
		{"relative workdir", imagetest.WithWorkingDir("app"), "absolute clean path"},
		{"unclean workdir", imagetest.WithWorkingDir("/app/../proc/1"), "absolute clean path"},
		{"NUL in env", imagetest.WithEnv("A=1\x00LD_PRELOAD=/x.so"), "NUL"},
		{"NUL in cmd", imagetest.WithCmd("sh\x00", "-c"), "NUL"},
		{"NUL in user", imagetest.WithUser("0\x00"), "NUL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			p := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "img.tar"), imagetest.LayoutEntry{Image: imagetest.BusyboxImage(t, tt.opt)})
			_, err := importPath(t, s, p)
			wantErr(t, "Import("+tt.name+")", err, ErrInvalidArchive, tt.want)
			assertNoDebris(t, s)
		})
	}
	// Positive control: a clean absolute working directory is fine.
	s := newStore(t)
	p := imagetest.WriteOCIArchive(t, filepath.Join(t.TempDir(), "ok.tar"), imagetest.LayoutEntry{Image: imagetest.BusyboxImage(t, imagetest.WithWorkingDir("/srv/app"))})
	if imgs, err := importPath(t, s, p); err != nil || imgs[0].Config.WorkingDir != "/srv/app" {
		t.Errorf("Import(workdir /srv/app) = %+v, %v", imgs, err)
	}
}
