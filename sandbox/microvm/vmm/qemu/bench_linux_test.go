package qemu

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox/microvm/vmm"
)

// BenchmarkBootToInit measures QEMU start (StartVM called) to the test
// init's marker on the console, under TCG with the jail, and reports the
// median as ms/boot-p50:
//
//	go test -run '^$' -bench BootToInit -benchtime 5x ./sandbox/microvm/vmm/qemu/
//
// On a host with working KVM (bare metal or nested VMX/SVM, not kvm_pvm)
// add CUBE_TEST_ACCEL=kvm to measure the KVM boot, and
// CUBE_BENCH_KEEP_BOOT_FILES=1 for the A side of an A/B of the boot-file
// page-out (Options.KeepBootFiles).
func BenchmarkBootToInit(b *testing.B) {
	kernel := testKernelOrSkip(b)
	keep := os.Getenv("CUBE_BENCH_KEEP_BOOT_FILES") == "1"
	var ms, startMs []float64
	for i := 0; i < b.N; i++ {
		cfg := benchConfig(b, kernel, "poweroff")
		d, err := New(Options{KeepBootFiles: keep})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
		start := time.Now()
		v, err := d.StartVM(ctx, cfg)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		startMs = append(startMs, float64(time.Since(start).Microseconds())/1000)
		if err := v.WaitConsole(ctx, marker); err != nil {
			cancel()
			v.Stop(context.Background())
			b.Fatal(err)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		<-v.Done()
		cancel()
		removeCgroupParent(cfg.Jail.CgroupParent)
	}
	slices.Sort(ms)
	slices.Sort(startMs)
	b.ReportMetric(ms[len(ms)/2], "ms/boot-p50")
	// StartVM alone: jail, QEMU's own start, QMP handshake.
	b.ReportMetric(startMs[len(startMs)/2], "ms/start-p50")
	b.ReportMetric(ms[len(ms)-1], "ms/boot-max")
	b.Logf("boot to init (ms): %v", ms)
}

// BenchmarkVMMOverhead boots a guest that touches 64 MiB and reports the
// QEMU process's RSS minus the resident part of the guest RAM mapping
// (what the guest touched) as MiB/vmm-overhead:
//
//	go test -run '^$' -bench 'VMMOverhead$' -benchtime 5x ./sandbox/microvm/vmm/qemu/
func BenchmarkVMMOverhead(b *testing.B) {
	kernel := testKernelOrSkip(b)
	var over, privOver []float64
	for i := 0; i < b.N; i++ {
		cfg := benchConfig(b, kernel, "touch")
		cfg.Cmdline += " cubemib=64"
		d, _ := New(Options{})
		ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
		v, err := d.StartVM(ctx, cfg)
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		if err := v.WaitConsole(ctx, "CUBE-TEST-TOUCHED"); err != nil {
			cancel()
			v.Stop(context.Background())
			b.Fatal(err)
		}
		u, err := ReadMemoryUsage(v.Pid(), cfg.MemoryMiB)
		v.Stop(context.Background())
		cancel()
		removeCgroupParent(cfg.Jail.CgroupParent)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("qemu rss %.1f MiB (anonymous %.1f MiB), guest ram resident %.1f MiB", mib(u.RSS), mib(u.Anon), mib(u.Guest))
		over = append(over, mib(u.Overhead()))
		privOver = append(privOver, mib(u.Anon-u.Guest))
	}
	slices.Sort(over)
	slices.Sort(privOver)
	b.ReportMetric(over[len(over)/2], "MiB/vmm-overhead")
	// Anonymous memory only, without the file pages every QEMU shares
	// (binary, libraries): closer to what each further VM costs the node.
	b.ReportMetric(privOver[len(privOver)/2], "MiB/vmm-anon-overhead")
}

// BenchmarkVMMOverhead5 boots five guests that touch 64 MiB each at once
// and, with all five up, reports each QEMU's overhead as RSS
// (MiB/vmm-overhead-5up, as vmm_overhead_mib) and as PSS
// (MiB/vmm-pss-overhead-5up: shared pages split between the QEMUs
// mapping them, what a node really pays per VM), medians over all VMs:
//
//	go test -run '^$' -bench VMMOverhead5 -benchtime 1x ./sandbox/microvm/vmm/qemu/
func BenchmarkVMMOverhead5(b *testing.B) {
	kernel := testKernelOrSkip(b)
	const n = 5
	var over, pss []float64
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), bootDeadline)
		vms := make([]*VM, 0, n)
		cfgs := make([]vmm.Config, 0, n)
		stopAll := func() {
			for j, v := range vms {
				v.Stop(context.Background())
				removeCgroupParent(cfgs[j].Jail.CgroupParent)
			}
			cancel()
		}
		for j := 0; j < n; j++ {
			cfg := benchConfig(b, kernel, "touch")
			cfg.Cmdline += " cubemib=64"
			d, _ := New(Options{})
			v, err := d.StartVM(ctx, cfg)
			if err != nil {
				stopAll()
				b.Fatal(err)
			}
			vms, cfgs = append(vms, v), append(cfgs, cfg)
		}
		for _, v := range vms {
			if err := v.WaitConsole(ctx, "CUBE-TEST-TOUCHED"); err != nil {
				stopAll()
				b.Fatal(err)
			}
		}
		for j, v := range vms {
			u, err := ReadMemoryUsage(v.Pid(), cfgs[j].MemoryMiB)
			if err != nil {
				stopAll()
				b.Fatal(err)
			}
			b.Logf("vm %d: rss %.1f MiB, pss %.1f MiB, guest ram resident %.1f MiB", j, mib(u.RSS), mib(u.PSS), mib(u.Guest))
			over = append(over, mib(u.Overhead()))
			pss = append(pss, mib(u.PSSOverhead()))
		}
		stopAll()
	}
	slices.Sort(over)
	slices.Sort(pss)
	b.ReportMetric(over[len(over)/2], "MiB/vmm-overhead-5up")
	b.ReportMetric(pss[len(pss)/2], "MiB/vmm-pss-overhead-5up")
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func testKernelOrSkip(b *testing.B) string {
	if os.Geteuid() != 0 || initErr != nil {
		b.Skip("needs root and the test initramfs")
	}
	k := testKernel()
	if k == "" {
		b.Skip("no guest kernel: make kernel or set CUBE_TEST_KERNEL")
	}
	return k
}

func benchConfig(b *testing.B, kernel, mode string) vmm.Config {
	return testConfig(b, kernel, mode)
}
