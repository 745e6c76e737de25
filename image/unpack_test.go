package image

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
	"golang.org/x/sys/unix"
)

// wantRefused imports p, asks for its rootfs and checks the unpack is
// refused with ErrUnsafeLayer naming offending, leaving no rootfs and no
// debris behind.
func wantRefused(t *testing.T, s *localStore, p, offending string, fragments ...string) {
	t.Helper()
	digest := importOne(t, s, p)
	_, err := s.RootFS(t.Context(), digest)
	wantErr(t, "RootFS()", err, ErrUnsafeLayer, append(fragments, fmt.Sprintf("%q", offending))...)
	wantErr(t, "RootFS()", err, errdefs.ErrInvalid)
	if _, err := os.Lstat(filepath.Join(s.rootfsDir, strings.TrimPrefix(digest, "sha256:"))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused image left a rootfs (%v)", err)
	}
	if ents, _ := os.ReadDir(s.tmpDir); len(ents) != 0 {
		t.Errorf("a refused unpack left %d entries in tmp", len(ents))
	}
}

func TestUnpackAttacks(t *testing.T) {
	for _, kind := range imagetest.Attacks() {
		t.Run(string(kind), func(t *testing.T) {
			sentinel := imagetest.PlantSentinel(t)
			_, offending := imagetest.MaliciousEntries(kind, sentinel.Dir)
			s := newStore(t)
			wantRefused(t, s, imagetest.BuildMalicious(t, "", kind, sentinel.Dir), offending)
			sentinel.Check(t)
		})
	}
}

// TestUnpackTraversalMessage checks the exact message for the classic
// "../../etc/passwd" and that nothing lands where it points.
func TestUnpackTraversalMessage(t *testing.T) {
	base := t.TempDir()
	s := openStore(t, filepath.Join(base, "a", "store"))
	digest := importOne(t, s, imagetest.BuildBusybox(t, "",
		imagetest.WithLayer(imagetest.File("../../etc/passwd", 0o644, imagetest.Payload))))
	_, err := s.RootFS(t.Context(), digest)
	want := `unsafe image layer: entry "../../etc/passwd" escapes the root filesystem`
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("RootFS() = %v; want an error ending %q", err, want)
	}
	for _, p := range []string{"etc", "a/etc", "a/store/etc", "a/store/tmp/etc"} {
		if _, err := os.Lstat(filepath.Join(base, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a refused traversal", filepath.Join(base, p))
		}
	}
}

func TestUnpackRefusals(t *testing.T) {
	sentinel := imagetest.PlantSentinel(t)
	F := imagetest.File
	tests := []struct {
		name      string
		edit      func(*Options)
		layers    [][]imagetest.Entry
		offending string
		want      string
		// atImport: refused when admitted (the uncompressed layers are
		// measured then), before any unpack.
		atImport bool
	}{
		{
			name:      "symlink parent inside the rootfs",
			layers:    [][]imagetest.Entry{{imagetest.Symlink("link", "bin"), F("link/x", 0o755, "x")}},
			offending: "link/x", want: `"link" is a symbolic link; refusing to write through it`,
		},
		{
			name: "symlink parent from a lower layer",
			layers: [][]imagetest.Entry{
				{imagetest.Symlink("evil", sentinel.Dir)},
				{F("evil/sentinel", 0o644, imagetest.Payload)},
			},
			offending: "evil/sentinel", want: "symbolic link",
		},
		{
			name: "directory replaced by a symlink, then written",
			layers: [][]imagetest.Entry{
				{imagetest.Dir("d/", 0o755)},
				{imagetest.Symlink("d", sentinel.Dir), F("d/sentinel", 0o644, imagetest.Payload)},
			},
			offending: "d/sentinel", want: "symbolic link",
		},
		{
			name:      "whiteout of ..",
			layers:    [][]imagetest.Entry{{F("etc/.wh...", 0o644, "")}},
			offending: "etc/.wh...", want: "names no file",
		},
		{
			name:      "file replacing the root",
			layers:    [][]imagetest.Entry{{F(".", 0o644, "")}},
			offending: ".", want: "would replace the root directory",
		},
		{
			name:      "file over MaxFileSize",
			edit:      func(o *Options) { o.MaxFileSize = 4 << 20 },
			layers:    [][]imagetest.Entry{{F("big", 0o644, strings.Repeat("x", 4<<20+1))}},
			offending: "big", want: "4.0 MiB per-file limit",
		},
		{
			name:      "rootfs over MaxRootFSSize",
			edit:      func(o *Options) { o.MaxRootFSSize = int64(len(imagetest.Busybox(t))) + 1000 },
			layers:    [][]imagetest.Entry{{F("a", 0o644, strings.Repeat("x", 600)), F("b", 0o644, strings.Repeat("x", 600))}},
			offending: "b", want: "root filesystem limit", atImport: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []imagetest.Option
			for _, l := range tt.layers {
				opts = append(opts, imagetest.WithLayer(l...))
			}
			var edits []func(*Options)
			if tt.edit != nil {
				edits = append(edits, tt.edit)
			}
			s := newStore(t, edits...)
			p := imagetest.BuildBusybox(t, "", opts...)
			if tt.atImport {
				_, err := importPath(t, s, p)
				wantErr(t, "Import()", err, ErrUnsafeLayer, tt.want)
				if l, _ := s.List(t.Context()); len(l) != 0 {
					t.Errorf("a refused import stored %+v", l)
				}
			} else {
				wantRefused(t, s, p, tt.offending, tt.want)
			}
			sentinel.Check(t)
		})
	}
}

// TestUnpackEntries checks what unpacking keeps: replacements that do not
// write through links, hard links, FIFOs, owners, setuid, times, xattrs.
func TestUnpackEntries(t *testing.T) {
	sentinel := imagetest.PlantSentinel(t)
	F := imagetest.File
	withXattrs := F("xattrs", 0o644, "x")
	withXattrs.Header.PAXRecords = map[string]string{
		"SCHILY.xattr.user.cube":              "kept",
		"SCHILY.xattr.trusted.overlay.opaque": "y",
	}
	s := newStore(t)
	digest := importOne(t, s, imagetest.BuildBusybox(t, "",
		imagetest.WithLayer(
			imagetest.Symlink("was-link", sentinel.File),
			imagetest.Dir("was-dir/", 0o755), F("was-dir/inner", 0o644, "inner"),
			F("was-file", 0o644, "file"),
		),
		imagetest.WithLayer(
			F("was-link", 0o600, "mine"), // replaces the symlink, not its target
			F("was-dir", 0o644, "now a file"),
			imagetest.Dir("was-file/", 0o750),
			imagetest.Hardlink("bin/bb", "/bin/busybox"),
			imagetest.Hardlink("bin/sh-link", "bin/sh"), // a link to the symlink itself
			imagetest.Fifo("run/fifo", 0o620),
			imagetest.Owned(F("bin/suid", 0o4755, "#!/bin/sh\n"), 1000, 1001),
			imagetest.Owned(imagetest.Symlink("owned-link", "/nowhere"), 7, 8),
			imagetest.Symlink("abs", "/etc/passwd"),
			F("/opt/leading-slash", 0o644, "ok"),
			F("opt/x/../cleaned", 0o644, "ok"),
			withXattrs,
		),
	))
	root := rootFS(t, s, digest)
	sentinel.Check(t)
	p := func(name string) string { return filepath.Join(root, name) }

	if b, err := os.ReadFile(p("was-link")); err != nil || string(b) != "mine" {
		t.Errorf("was-link = %q, %v; want the new file's content", b, err)
	}
	if b, err := os.ReadFile(p("was-dir")); err != nil || string(b) != "now a file" {
		t.Errorf("was-dir = %q, %v; want a file", b, err)
	}
	if fi, err := os.Lstat(p("was-file")); err != nil || fi.Mode() != os.ModeDir|0o750 {
		t.Errorf("was-file: %v, %v; want a 0750 directory", fi, err)
	}
	var bb, busybox unix.Stat_t
	if unix.Lstat(p("bin/bb"), &bb) != nil || unix.Lstat(p("bin/busybox"), &busybox) != nil || bb.Ino != busybox.Ino {
		t.Errorf("bin/bb is not a hard link to bin/busybox")
	}
	if got, err := os.Readlink(p("bin/sh-link")); err != nil || got != "/bin/busybox" {
		t.Errorf("bin/sh-link -> %q, %v; want a hard link to the symlink bin/sh", got, err)
	}
	if fi, err := os.Lstat(p("run/fifo")); err != nil || fi.Mode() != os.ModeNamedPipe|0o620 {
		t.Errorf("run/fifo: %v, %v; want a 0620 FIFO", fi, err)
	}
	if got, err := os.Readlink(p("abs")); err != nil || got != "/etc/passwd" {
		t.Errorf("abs -> %q, %v; want /etc/passwd verbatim", got, err)
	}
	for _, name := range []string{"opt/leading-slash", "opt/cleaned"} {
		if _, err := os.Stat(p(name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	fi, err := os.Lstat(p("bin/suid"))
	if err != nil || fi.Mode() != os.ModeSetuid|0o755 {
		t.Errorf("bin/suid: %v, %v; want setuid 0755", fi, err)
	}
	if os.Geteuid() == 0 {
		for name, want := range map[string][2]uint32{"bin/suid": {1000, 1001}, "owned-link": {7, 8}, "bin/busybox": {0, 0}} {
			fi, err := os.Lstat(p(name))
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			if st.Uid != want[0] || st.Gid != want[1] {
				t.Errorf("owner of %s = %d:%d; want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
			}
		}
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(p("xattrs"), "user.cube", buf); err == nil {
		if string(buf[:n]) != "kept" {
			t.Errorf("xattr user.cube = %q; want kept", buf[:n])
		}
	} else if !errors.Is(err, unix.ENOTSUP) {
		t.Errorf("xattr user.cube: %v", err)
	}
	if _, err := unix.Lgetxattr(p("xattrs"), "trusted.overlay.opaque", buf); err == nil {
		t.Errorf("xattr trusted.overlay.opaque was set; want it dropped")
	}
}

func TestEntryPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"bin/sh", "bin/sh"}, {"./bin/sh", "bin/sh"}, {"/bin/sh", "bin/sh"}, {"bin/", "bin"},
		{"./", "."}, {"", "."}, {"a/../b", "b"}, {"//a//b/", "a/b"},
	}
	for _, tt := range tests {
		if got, err := entryPath(tt.in); err != nil || got != tt.want {
			t.Errorf("entryPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"..", "../x", "a/../../x", "/../x", "./../x"} {
		if _, err := entryPath(in); !errors.Is(err, ErrUnsafeLayer) {
			t.Errorf("entryPath(%q) = %v; want ErrUnsafeLayer", in, err)
		}
	}
}

// TestLegacyDockerSave imports the pre-Docker-25 `docker save` layout: one
// directory per layer, a repeated layer stored as a symlink to the first.
func TestLegacyDockerSave(t *testing.T) {
	layer := imagetest.LayerTar(t, imagetest.BusyboxEntries(t)...)
	diffID := sha256Hex(layer)
	config := fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},`+
		`"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}`, diffID, diffID)
	manifest := `[{"Config":"cfg.json","RepoTags":["cube.test/legacy:v1"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]`
	p := imagetest.WriteTar(t, "",
		imagetest.File("manifest.json", 0o644, manifest),
		imagetest.File("cfg.json", 0o644, config),
		imagetest.Dir("aaa/", 0o755),
		imagetest.File("aaa/layer.tar", 0o644, string(layer)),
		imagetest.Dir("bbb/", 0o755),
		imagetest.Symlink("bbb/layer.tar", "../aaa/layer.tar"),
	)
	s := newStore(t)
	imgs := importFile(t, s, p)
	if len(imgs) != 1 || imgs[0].Ref != "cube.test/legacy:v1" || imgs[0].Size != 2*int64(len(layer)) {
		t.Fatalf("Import(legacy docker save) = %+v; want cube.test/legacy:v1 with two %d-byte layers", imgs, len(layer))
	}
	if _, err := os.Stat(filepath.Join(rootFS(t, s, imgs[0].Digest), "bin/busybox")); err != nil {
		t.Errorf("bin/busybox: %v", err)
	}
	// A layer whose content does not match the config's diff_id is refused.
	bad := imagetest.WriteTar(t, "",
		imagetest.File("manifest.json", 0o644, manifest),
		imagetest.File("cfg.json", 0o644, config),
		imagetest.File("aaa/layer.tar", 0o644, string(layer)),
		imagetest.File("bbb/layer.tar", 0o644, string(imagetest.LayerTar(t, imagetest.File("x", 0o644, "x")))),
	)
	_, err := importPath(t, newStore(t), bad)
	wantErr(t, "Import(layer not matching diff_id)", err, ErrInvalidArchive, "but the config's rootfs.diff_ids[1] is")
}

// Check that imagetest's layers really are the tar types they claim.
func TestImagetestEntryTypes(t *testing.T) {
	for _, tt := range []struct {
		e    imagetest.Entry
		want byte
	}{
		{imagetest.CharDevice("c", 1, 1), tar.TypeChar},
		{imagetest.BlockDevice("b", 8, 0), tar.TypeBlock},
		{imagetest.Fifo("f", 0o600), tar.TypeFifo},
		{imagetest.Hardlink("h", "x"), tar.TypeLink},
	} {
		if tt.e.Header.Typeflag != tt.want {
			t.Errorf("%s has type %q; want %q", tt.e.Header.Name, tt.e.Header.Typeflag, tt.want)
		}
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
