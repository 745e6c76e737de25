package microvm

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/jail"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qemu"
)

// A template is a VM booted to agent ready and saved, that instances are
// cloned from instead of booting (docs/microvm-templates.md). Its RAM is
// a sealed memfd every clone maps privately, so clones share the pages
// none of them wrote; the device state is a small file.
const (
	// TemplateImageSlots is how many image drives a template has room
	// for: an instance with more distinct images boots cold.
	TemplateImageSlots = 4
	// templateLayout versions the devices a template declares (drive
	// slots, NIC): a change makes every saved template stale.
	templateLayout = 2
	// templateMeta, templateState and templateMem are a saved template's
	// files; templateEmpty is the placeholder behind unused drive slots.
	templateMeta  = "meta.json"
	templateState = "state"
	templateMem   = "mem"
	templateEmpty = "empty"
	// PlaceholderBytes is the size a template's guest takes each drive
	// to have (see BuildTemplate); a clone's drives must be no larger.
	PlaceholderBytes = 1 << 40
)

// TemplateKey is everything a clone must share with its template: the
// same kernel, agent and VMM binaries (by file identity: path, size and
// inode; the kernel's and the initramfs's paths name their hashes, and a
// replaced binary is a new inode), and the same machine.
type TemplateKey struct {
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	VMM       string `json:"vmm"`
	Accel     string `json:"accel"`
	Cmdline   string `json:"cmdline"`
	VCPUs     int    `json:"vcpus"`
	MemoryMiB int    `json:"memoryMiB"`
	Layout    int    `json:"layout"`
}

// ID names the key: the first 16 hex digits of its JSON's sha256.
func (k TemplateKey) ID() string {
	b, _ := json.Marshal(k)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// Size is the key's machine size, as `cube nodes` shows it ("1x324M").
func (k TemplateKey) Size() string { return fmt.Sprintf("%dx%dM", k.VCPUs, k.MemoryMiB) }

// fileID identifies a file's content cheaply: a rebuilt or replaced file
// is a new inode (builds and package managers rename into place). Not
// the mtime: the node touches the initramfs it uses (guest/initramfs).
func fileID(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("template key: %w", err)
	}
	return fmt.Sprintf("%s:%d:%d:%d", path, st.Size, st.Dev, st.Ino), nil
}

// TemplateKeyFor is the key of the template a VM of vcpus and mib MiB
// under o is cloned from.
func TemplateKeyFor(o sandbox.VMOptions, vcpus, mib int) (TemplateKey, error) {
	k := TemplateKey{VCPUs: vcpus, MemoryMiB: mib, Layout: templateLayout,
		Accel: cmp.Or(o.Accel, string(vmm.AccelTCG)), Cmdline: cmdlineFor(vmm.Accel(cmp.Or(o.Accel, string(vmm.AccelTCG))), vcpus)}
	bin, err := qemu.ResolveBinary(o.VMM)
	if err != nil {
		return k, err
	}
	for _, f := range []struct {
		dst  *string
		path string
	}{{&k.Kernel, o.Kernel}, {&k.Initrd, o.Initrd}, {&k.VMM, bin}} {
		if f.path == "" {
			return k, fmt.Errorf("template key: no kernel, initramfs or vmm: %w", errdefs.ErrInvalid)
		}
		id, err := fileID(f.path)
		if err != nil {
			return k, err
		}
		*f.dst = id
	}
	return k, nil
}

// SizeOf is the vCPUs and MiB of the VM a spec's sandbox runs in (what a
// node looks a template up by).
func SizeOf(spec sandbox.Spec) (vcpus, mib int) {
	return (&vmSandbox{spec: spec}).size()
}

// Template is a saved template, ready to clone.
type Template struct {
	Key TemplateKey
	// Dir holds its files (meta.json, state, mem, empty).
	Dir string
	// Mem is the template's RAM: a sealed memfd (no write, grow or shrink,
	// by anyone, ever), which clones map privately.
	Mem *os.File
}

// Close releases the template's memory (clones keep their mappings).
func (t *Template) Close() error { return t.Mem.Close() }

type templateMetaFile struct {
	Key TemplateKey `json:"key"`
	// StateSHA256 and MemSHA256 (of the RAM's data extents, with their
	// offsets) catch a damaged file before a clone would run it.
	StateSHA256 string    `json:"stateSHA256"`
	MemSHA256   string    `json:"memSHA256"`
	MemBytes    int64     `json:"memBytes"`
	BuiltAt     time.Time `json:"builtAt"`
	BuildMs     float64   `json:"buildMs"`
}

// BuildTemplate boots a template VM for key's size under o, waits for
// its agent, saves it under root/<key id>/ and returns it. The guest has
// every device a clone will have (the writable drive, TemplateImageSlots
// image drives and a NIC), all behind placeholders, and has read nothing
// of any instance: the agent answered Hello, no more.
func BuildTemplate(ctx context.Context, o sandbox.VMOptions, key TemplateKey, root, cgroupParent string, log *slog.Logger) (_ *Template, err error) {
	log = cmp.Or(log, slog.Default()).With("component", "sandbox/microvm", "template", key.ID(), "size", key.Size())
	start := time.Now()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(root, ".build-"+key.ID()+"-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// The placeholders are sparse and larger than any drive a clone
	// gets, so the template's guest takes each drive to be that large and
	// a clone's real, smaller one needs no re-probe (the guest sizes a
	// virtio disk once, at probe; it never reads past its filesystem,
	// and the clone's QEMU refuses anything past the real file's end).
	// Their probe read only zeros, and the guest drops a disk's cached
	// pages when its last opener closes it. Two of them: QEMU locks a
	// writable drive's file against every other opener.
	empty, emptyRW := filepath.Join(tmp, templateEmpty), filepath.Join(tmp, templateEmpty+"-rw")
	for _, p := range []string{empty, emptyRW} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
		if err := os.Truncate(p, PlaceholderBytes); err != nil {
			return nil, err
		}
	}
	mem, err := newMemfd("cube-template-"+key.ID(), int64(key.MemoryMiB)<<20)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			mem.Close()
		}
	}()

	vmID := "template-" + key.ID()
	uid, err := jail.AllocateID(IDDir, vmID)
	if err != nil {
		return nil, err
	}
	defer jail.ReleaseID(IDDir, vmID)
	drv, err := newDriver(o, log)
	if err != nil {
		return nil, err
	}
	stateDir := filepath.Join(tmp, "vm")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		return nil, err
	}
	drives := []vmm.Drive{{ID: writableDrive, Path: emptyRW}}
	drives = append(drives, placeholderSlots(0, empty)...)
	cfg := baseConfig(o, vmID, stateDir, uid, key.VCPUs, key.MemoryMiB, drives)
	cfg.Jail.CgroupParent = cgroupParent
	// A card like every clone's, reaching nothing.
	cfg.Net = &vmm.NIC{Tap: tapName, MAC: randomMAC(), Isolated: true}
	cfg.Memory = &vmm.Memory{File: mem, Shared: true}
	if cfg.Kernel != "" && !matchesKey(cfg, key) {
		return nil, fmt.Errorf("template %s: the kernel, initramfs or vmm changed while it was asked for: %w", key.ID(), errdefs.ErrConflict)
	}

	bctx, cancel := context.WithTimeout(ctx, vmm.DefaultBootTimeout(vmm.Accel(key.Accel)))
	defer cancel()
	vm, err := drv.StartVM(bctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", key.ID(), err)
	}
	defer func() {
		vm.Stop(context.WithoutCancel(ctx))
		if cgroupParent != "" {
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			(&jail.Cgroup{Path: cgroupParent}).Remove(rctx)
			rcancel()
		}
	}()
	// Agent ready, read off the console: the clone's host must be the
	// first to connect to the agent (see agentapi.ReadyMarker).
	if err := vm.WaitConsole(bctx, agentapi.ReadyMarker); err != nil {
		return nil, fmt.Errorf("template %s: the guest agent never got ready: %w (console: %q)", key.ID(), err, consoleTail(vm))
	}
	booted := time.Since(start)

	statePath := filepath.Join(tmp, templateState)
	sf, err := os.OpenFile(statePath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	err = vm.Save(bctx, sf, true)
	sf.Close()
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", key.ID(), err)
	}
	vm.Stop(context.WithoutCancel(ctx))
	if err := sealMemfd(mem); err != nil {
		return nil, fmt.Errorf("template %s: %w", key.ID(), err)
	}
	meta := templateMetaFile{Key: key, BuiltAt: time.Now().UTC()}
	if meta.StateSHA256, err = fileSHA256(statePath); err != nil {
		return nil, err
	}
	if meta.MemSHA256, meta.MemBytes, err = copySparse(filepath.Join(tmp, templateMem), mem); err != nil {
		return nil, fmt.Errorf("template %s: save its memory: %w", key.ID(), err)
	}
	meta.BuildMs = float64(time.Since(start).Microseconds()) / 1000
	if err := writeJSON(filepath.Join(tmp, templateMeta), meta); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(stateDir); err != nil {
		return nil, err
	}
	dir := filepath.Join(root, key.ID())
	os.RemoveAll(dir) // a stale or damaged one of the same key
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	log.Info("template ready", "boot", booted, "took", time.Since(start), "ram_bytes", meta.MemBytes)
	return &Template{Key: key, Dir: dir, Mem: mem}, nil
}

// LoadTemplate reads the template of key saved under root (after a
// restart of the node: the memfd died with the process that held it). A
// damaged or stale one is an error; the caller builds it again.
func LoadTemplate(root string, key TemplateKey) (*Template, error) {
	dir := filepath.Join(root, key.ID())
	var meta templateMetaFile
	if err := readJSON(filepath.Join(dir, templateMeta), maxRecordBytes, &meta); err != nil {
		return nil, fmt.Errorf("template %s: %w", key.ID(), err)
	}
	if meta.Key != key {
		return nil, fmt.Errorf("template %s: saved for another kernel, agent or vmm: %w", key.ID(), errdefs.ErrConflict)
	}
	if sum, err := fileSHA256(filepath.Join(dir, templateState)); err != nil || sum != meta.StateSHA256 {
		return nil, fmt.Errorf("template %s: device state damaged (%v): %w", key.ID(), err, errdefs.ErrInvalid)
	}
	mem, err := newMemfd("cube-template-"+key.ID(), int64(key.MemoryMiB)<<20)
	if err != nil {
		return nil, err
	}
	sum, n, err := loadSparse(mem, filepath.Join(dir, templateMem))
	if err == nil && (sum != meta.MemSHA256 || n != meta.MemBytes) {
		err = fmt.Errorf("memory damaged: %w", errdefs.ErrInvalid)
	}
	if err == nil {
		err = sealMemfd(mem)
	}
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("template %s: %w", key.ID(), err)
	}
	return &Template{Key: key, Dir: dir, Mem: mem}, nil
}

// SavedTemplateKey is the key of the template saved in dir.
func SavedTemplateKey(dir string) (TemplateKey, error) {
	var meta templateMetaFile
	err := readJSON(filepath.Join(dir, templateMeta), maxRecordBytes, &meta)
	return meta.Key, err
}

// OpenTemplate checks that the template in dir, whose memory is mem (a
// sealed memfd), fits key; it does not read the memory.
func OpenTemplate(dir string, mem *os.File, key TemplateKey) (*Template, error) {
	var meta templateMetaFile
	if err := readJSON(filepath.Join(dir, templateMeta), maxRecordBytes, &meta); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	if meta.Key != key {
		return nil, fmt.Errorf("template %s is for %s with other binaries, not this vm (%s): %w", meta.Key.ID(), meta.Key.Size(), key.Size(), errdefs.ErrConflict)
	}
	seals, err := unix.FcntlInt(mem.Fd(), unix.F_GET_SEALS, 0)
	const want = unix.F_SEAL_WRITE | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	if err != nil || seals&want != want {
		return nil, fmt.Errorf("template %s: its memory is not a sealed memfd: %w", key.ID(), errdefs.ErrInvalid)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(mem.Fd()), &st); err != nil || st.Size != int64(key.MemoryMiB)<<20 {
		return nil, fmt.Errorf("template %s: its memory is not %d MiB: %w", key.ID(), key.MemoryMiB, errdefs.ErrInvalid)
	}
	return &Template{Key: key, Dir: dir, Mem: mem}, nil
}

// OpenTemplateFD is the template o names (TemplateDir, and its memory as
// the descriptor TemplateMemFD, which it dups: the caller keeps its own,
// and the template owns the dup), checked against the key of a VM of
// vcpus and mib MiB under o.
func OpenTemplateFD(o sandbox.VMOptions, vcpus, mib int) (*Template, error) {
	fd, err := unix.FcntlInt(uintptr(o.TemplateMemFD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("template memory fd %d: %w", o.TemplateMemFD, err)
	}
	mem := os.NewFile(uintptr(fd), "template-mem")
	key, err := TemplateKeyFor(o, vcpus, mib)
	if err == nil {
		var t *Template
		if t, err = OpenTemplate(o.TemplateDir, mem, key); err == nil {
			return t, nil
		}
	}
	mem.Close()
	return nil, err
}

func matchesKey(cfg vmm.Config, key TemplateKey) bool {
	k, err := TemplateKeyFor(sandbox.VMOptions{Kernel: cfg.Kernel, Initrd: cfg.Initrd, Accel: string(cfg.Accel)}, cfg.VCPUs, cfg.MemoryMiB)
	if err != nil {
		return false
	}
	k.VMM = key.VMM // the driver picked the binary; the caller's key names it
	return k == key
}

// placeholderSlots are the image drives img<from>..img<TemplateImageSlots-1>
// behind the empty placeholder.
func placeholderSlots(from int, empty string) []vmm.Drive {
	var ds []vmm.Drive
	for i := from; i < TemplateImageSlots; i++ {
		ds = append(ds, vmm.Drive{ID: fmt.Sprintf("img%d", i), Path: empty, ReadOnly: true})
	}
	return ds
}

func newMemfd(name string, size int64) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return f, nil
}

// sealMemfd makes f immutable for everyone holding it: no write(2), no
// shared writable mapping, no resize, no unsealing. Private mappings
// still work, copy-on-write.
func sealMemfd(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)
	if err != nil {
		return fmt.Errorf("seal the template's memory: %w", err)
	}
	return nil
}

// extents calls fn for each data extent of f (SEEK_DATA/SEEK_HOLE: a
// guest's RAM is mostly holes).
func extents(f *os.File, fn func(off, n int64) error) error {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, syscall.ENXIO) {
			return nil
		} else if err != nil {
			return err
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		if err := fn(data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copySparse writes src's data extents to a new sparse file dst and
// returns their hash (offsets included) and byte count.
func copySparse(dst string, src *os.File) (string, int64, error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", 0, err
	}
	defer out.Close()
	size, err := src.Seek(0, io.SeekEnd)
	if err != nil {
		return "", 0, err
	}
	if err := out.Truncate(size); err != nil {
		return "", 0, err
	}
	h := sha256.New()
	var total int64
	err = extents(src, func(off, n int64) error {
		fmt.Fprintf(h, "%d+%d\n", off, n)
		w := io.NewOffsetWriter(out, off)
		if _, err := io.Copy(io.MultiWriter(w, h), io.NewSectionReader(src, off, n)); err != nil {
			return err
		}
		total += n
		return nil
	})
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), total, out.Sync()
}

// loadSparse copies the sparse file src's data into dst (copySparse's
// inverse) and returns the same hash.
func loadSparse(dst *os.File, src string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", 0, err
	}
	if size, _ := dst.Seek(0, io.SeekEnd); st.Size() != size {
		return "", 0, fmt.Errorf("memory file is %d bytes, want %d: %w", st.Size(), size, errdefs.ErrInvalid)
	}
	h := sha256.New()
	var total int64
	err = extents(in, func(off, n int64) error {
		fmt.Fprintf(h, "%d+%d\n", off, n)
		w := io.NewOffsetWriter(dst, off)
		if _, err := io.Copy(io.MultiWriter(w, h), io.NewSectionReader(in, off, n)); err != nil {
			return err
		}
		total += n
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), total, err
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// entropy is what a clone's agent reseeds its kernel's random pool with.
func entropy() []byte {
	b := make([]byte, 64)
	rand.Read(b)
	return b
}
