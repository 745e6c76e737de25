package qemu

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// TestProbe: the probe's answer is backed by a real boot (a KVM answer
// must boot the test VM under KVM), it is cached for this host boot, and
// a cache from another boot is ignored. These hosts have a /dev/kvm that
// cannot run Linux (kvm_pvm), so here the answer is tcg.
func TestProbe(t *testing.T) {
	kernel := requireVM(t)
	cache := filepath.Join(t.TempDir(), "accel.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts := ProbeOptions{Kernel: kernel, CacheFile: cache, Timeout: 10 * time.Second, Logger: testLogger(t)}
	got := Probe(ctx, opts)
	t.Logf("probe: %s", got)
	if got == vmm.AccelKVM {
		cfg := testConfig(t, kernel, "hang")
		cfg.Accel = vmm.AccelKVM
		v := startVM(t, cfg)
		bctx, bcancel := context.WithTimeout(ctx, 10*time.Second)
		defer bcancel()
		if err := v.WaitConsole(bctx, marker); err != nil {
			t.Fatalf("probe said kvm, but a kvm guest did not boot: %v", err)
		}
	} else if os.Getenv("CUBE_EXPECT_KVM") == "1" {
		t.Fatalf("probe = tcg; CUBE_EXPECT_KVM=1 says this host's KVM works")
	}

	var c probeCache
	b, err := os.ReadFile(cache)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Accel != got || c.BootID == "" {
		t.Fatalf("cache file = %q, %v; want the answer and this boot's id", b, err)
	}
	other := vmm.AccelKVM
	if got == vmm.AccelKVM {
		other = vmm.AccelTCG
	}
	// The same boot: the cached answer is used (no new probe).
	c.Accel = other
	b, _ = json.Marshal(c)
	os.WriteFile(cache, b, 0o644)
	if a := Probe(ctx, opts); a != other {
		t.Errorf("Probe with a cache of this boot = %s; want the cached %s", a, other)
	}
	// Another boot: probed again.
	c.BootID = "another-boot"
	b, _ = json.Marshal(c)
	os.WriteFile(cache, b, 0o644)
	if a := Probe(ctx, opts); a != got {
		t.Errorf("Probe with a cache of another boot = %s; want a fresh %s", a, got)
	}
}
