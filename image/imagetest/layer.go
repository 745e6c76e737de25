package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"path"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Epoch is the modification time of every entry the builders make, so that
// builds are reproducible.
var Epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Entry is one member of a layer tar. Build entries with Dir, File,
// Symlink, Hardlink, Fifo, CharDevice, BlockDevice, Whiteout and Opaque,
// or fill Header yourself (Size is set from Body).
type Entry struct {
	Header tar.Header
	Body   []byte
}

func header(name string, typ byte, mode int64) tar.Header {
	return tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: Epoch, Format: tar.FormatPAX}
}

// Dir is a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Header: header(name, tar.TypeDir, mode)}
}

// File is a regular file entry.
func File(name string, mode int64, body string) Entry {
	return Entry{Header: header(name, tar.TypeReg, mode), Body: []byte(body)}
}

// Owned returns e owned by uid:gid.
func Owned(e Entry, uid, gid int) Entry {
	e.Header.Uid, e.Header.Gid = uid, gid
	return e
}

// Symlink is a symbolic link entry name -> target (stored verbatim).
func Symlink(name, target string) Entry {
	h := header(name, tar.TypeSymlink, 0o777)
	h.Linkname = target
	return Entry{Header: h}
}

// Hardlink is a hard link entry name => target (a path in the layer's root).
func Hardlink(name, target string) Entry {
	h := header(name, tar.TypeLink, 0o644)
	h.Linkname = target
	return Entry{Header: h}
}

// Fifo is a named pipe entry.
func Fifo(name string, mode int64) Entry {
	return Entry{Header: header(name, tar.TypeFifo, mode)}
}

// CharDevice is a character device node entry.
func CharDevice(name string, major, minor int64) Entry {
	h := header(name, tar.TypeChar, 0o666)
	h.Devmajor, h.Devminor = major, minor
	return Entry{Header: h}
}

// BlockDevice is a block device node entry.
func BlockDevice(name string, major, minor int64) Entry {
	h := header(name, tar.TypeBlock, 0o660)
	h.Devmajor, h.Devminor = major, minor
	return Entry{Header: h}
}

// Whiteout deletes p (from lower layers): an empty file ".wh.BASE" in p's
// directory.
func Whiteout(p string) Entry {
	return File(path.Join(path.Dir(p), ".wh."+path.Base(p)), 0o644, "")
}

// Opaque makes dir opaque: what lower layers put in it disappears.
func Opaque(dir string) Entry {
	return File(path.Join(dir, ".wh..wh..opq"), 0o644, "")
}

// LayerTar returns the uncompressed layer tar of entries, in order.
func LayerTar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("imagetest: tar header %q: %v", h.Name, err)
		}
		if len(e.Body) > 0 {
			if _, err := tw.Write(e.Body); err != nil {
				t.Fatalf("imagetest: tar body %q: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("imagetest: close tar: %v", err)
	}
	return buf.Bytes()
}

// Layer returns entries as a gzip-compressed OCI layer.
func Layer(t testing.TB, entries ...Entry) v1.Layer {
	t.Helper()
	return LayerFromTar(t, LayerTar(t, entries...))
}

// LayerFromTar wraps an uncompressed layer tar as a gzip-compressed OCI
// layer.
func LayerFromTar(t testing.TB, tarBytes []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatalf("imagetest: layer: %v", err)
	}
	return l
}
