package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestRandPoolInfo(t *testing.T) {
	e := []byte("0123456789abcdef0123456789abcdef")
	b := randPoolInfo(e)
	if got := binary.NativeEndian.Uint32(b[0:4]); got != uint32(len(e)*8) {
		t.Errorf("entropy_count = %d; want %d bits", got, len(e)*8)
	}
	if got := binary.NativeEndian.Uint32(b[4:8]); got != uint32(len(e)) {
		t.Errorf("buf_size = %d; want %d bytes", got, len(e))
	}
	if string(b[8:]) != string(e) || len(b) != 8+len(e) {
		t.Errorf("buf = %q; want the entropy itself", b[8:])
	}
}

func TestIsVirtioDev(t *testing.T) {
	for in, want := range map[string]bool{
		"virtio0": true, "virtio12": true, "virtio": false, "bind": false, "unbind": false,
		"uevent": false, "module": false, "virtio+1": false, "virtio-1": false, "virtio1a": false, "xvirtio1": false,
	} {
		if got := isVirtioDev(in); got != want {
			t.Errorf("isVirtioDev(%q) = %v; want %v", in, got, want)
		}
	}
}

// sysfsTree lays out, under a temp dir, the shape of /sys/bus/virtio the
// re-probe reads: the driver's dir with its files and links to bound
// devices, and each device with its block/<disk> (disk "" for none).
func sysfsTree(t *testing.T, devs map[string]string, bound ...string) string {
	t.Helper()
	bus := t.TempDir()
	drv := filepath.Join(bus, "drivers", "virtio_blk")
	os.MkdirAll(drv, 0o755)
	for _, f := range []string{"bind", "unbind", "uevent"} {
		os.WriteFile(filepath.Join(drv, f), nil, 0o600)
	}
	for dev, disk := range devs {
		dir := filepath.Join(bus, "devices", dev)
		os.MkdirAll(dir, 0o755)
		if disk != "" {
			os.MkdirAll(filepath.Join(dir, "block", disk), 0o755)
		}
	}
	for _, dev := range bound {
		if err := os.Symlink(filepath.Join(bus, "devices", dev), filepath.Join(drv, dev)); err != nil {
			t.Fatal(err)
		}
	}
	return bus
}

func TestBoundVirtioDisks(t *testing.T) {
	// virtio0 is the console (another driver), virtio3 a disk bound to
	// virtio_blk, virtio4 one bound but (for now) without a disk.
	bus := sysfsTree(t, map[string]string{"virtio0": "", "virtio3": "vda", "virtio4": "", "virtio5": "vdb"}, "virtio3", "virtio4", "virtio5")
	got, err := boundVirtioDisks(bus)
	want := []virtioDisk{{"virtio3", "vda"}, {"virtio5", "vdb"}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("boundVirtioDisks = %v, %v; want %v", got, err, want)
	}
	if got, err := boundVirtioDisks(t.TempDir()); err != nil || len(got) != 0 {
		t.Errorf("boundVirtioDisks(no virtio_blk) = %v, %v; want none", got, err)
	}
}

func TestReprobeDisks(t *testing.T) {
	bus := sysfsTree(t, map[string]string{"virtio3": "vda"}, "virtio3")
	nodes := t.TempDir()
	os.WriteFile(filepath.Join(nodes, "vda"), nil, 0o600)
	got, err := reprobeDisks(context.Background(), bus, nodes)
	if err != nil || len(got) != 1 || got[0].dev != "virtio3" || got[0].was != "vda" || got[0].is != "vda" {
		t.Fatalf("reprobeDisks = %v, %v; want virtio3, vda again", got, err)
	}
	for _, f := range []string{"unbind", "bind"} {
		if b, _ := os.ReadFile(filepath.Join(bus, "drivers", "virtio_blk", f)); string(b) != "virtio3" {
			t.Errorf("%s got %q; want virtio3", f, b)
		}
	}
}

// TestWaitDisk: the wait ends when the disk and its node are there, and
// at its deadline, with an error, when they never are.
func TestWaitDisk(t *testing.T) {
	bus := sysfsTree(t, map[string]string{"virtio3": ""})
	dev, nodes := filepath.Join(bus, "devices", "virtio3"), t.TempDir()
	c, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := waitDisk(c, dev, nodes); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waitDisk(no disk) = %v; want the deadline", err)
	}
	// The disk appears in sysfs first, its node a moment later.
	os.MkdirAll(filepath.Join(dev, "block", "vdc"), 0o755)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if disk, err := waitDisk(c, dev, nodes); err != nil || disk != "vdc" {
			t.Errorf("waitDisk = %q, %v; want vdc", disk, err)
		}
	}()
	os.WriteFile(filepath.Join(nodes, "vdc"), nil, 0o600)
	<-done
}

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "": slog.LevelInfo, "info": slog.LevelInfo, "DEBUG x": slog.LevelInfo} {
		if got := logLevel(in); got != want {
			t.Errorf("logLevel(%q) = %v; want %v", in, got, want)
		}
	}
}
