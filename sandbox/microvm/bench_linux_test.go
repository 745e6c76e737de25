package microvm

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

// BenchmarkContainerStart times Start of one busybox container in a VM
// that is already booted: the agent's Start (Setup's mounts the first
// time, the container init's exec and root, the main process's fork),
// the part of a start that the guest's own Go start-up costs.
//
//   - first: the first Start in a freshly booted VM (a new VM each
//     iteration, booted and destroyed untimed), as an instance's start;
//   - again: a restart in the same VM, once the container was killed
//     (the init's binary is then in the guest's page cache).
//
// p50-ms is the median start.
//
//	go test -run '^$' -bench ContainerStart -benchtime 10x ./sandbox/microvm
func BenchmarkContainerStart(b *testing.B) {
	opts := vmtest.Options(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	newVM := func(b *testing.B) sandbox.Sandbox {
		sb := newSleeper(b, opts)
		if err := sb.Create(ctx); err != nil {
			sb.Destroy(context.Background())
			b.Fatal(err)
		}
		return sb
	}
	start := func(b *testing.B, sb sandbox.Sandbox) time.Duration {
		t0 := time.Now()
		if err := sb.Start(ctx, "app", sandbox.Stdio{}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	kill := func(b *testing.B, sb sandbox.Sandbox) {
		if err := sb.Stop(ctx, "app", 0); err != nil {
			b.Fatal(err)
		}
		if st, err := sb.Wait(ctx, "app"); err != nil || st.Phase != sandbox.PhaseExited {
			b.Fatalf("Wait after Stop = %+v, %v; want exited", st, err)
		}
	}
	p50 := func(b *testing.B, took []time.Duration) {
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	}
	b.Run("first", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			b.StopTimer()
			sb := newVM(b)
			b.StartTimer()
			took = append(took, start(b, sb))
			b.StopTimer()
			if err := sb.Destroy(context.Background()); err != nil {
				b.Fatalf("Destroy: %v", err)
			}
			b.StartTimer()
		}
		p50(b, took)
	})
	b.Run("again", func(b *testing.B) {
		sb := newVM(b)
		defer func() {
			if err := sb.Destroy(context.Background()); err != nil {
				b.Errorf("Destroy: %v", err)
			}
		}()
		// The first start pays the cold page cache; "first" measures it.
		start(b, sb)
		kill(b, sb)
		var took []time.Duration
		for b.Loop() {
			took = append(took, start(b, sb))
			b.StopTimer()
			kill(b, sb)
			b.StartTimer()
		}
		p50(b, took)
	})
}

// newSleeper is a sandbox (not created) of one container, app, that
// sleeps, on the test image.
func newSleeper(b *testing.B, opts sandbox.VMOptions) sandbox.Sandbox {
	id := sandboxtest.RandomID()
	spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(b.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
		Containers: []sandbox.ContainerSpec{{Name: "app", Args: []string{"sleep", "3600"}}}}
	spec.Containers[0].RootFS = vmtest.Image(b)
	sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(b), VM: opts})
	if err != nil {
		b.Fatal(err)
	}
	return sb
}

// BenchmarkExec times Exec of `true` in a running container (to its
// exit), from the host: the container init's spawn of an exec. p50-ms
// and max-ms are the median and the slowest.
//
//	go test -run '^$' -bench Exec -benchtime 20x ./sandbox/microvm
func BenchmarkExec(b *testing.B) {
	opts := vmtest.Options(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sb := newSleeper(b, opts)
	defer func() {
		if err := sb.Destroy(context.Background()); err != nil {
			b.Errorf("Destroy: %v", err)
		}
	}()
	if err := sb.Create(ctx); err != nil {
		b.Fatal(err)
	}
	if err := sb.Start(ctx, "app", sandbox.Stdio{}); err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if code, err := sb.Exec(ctx, "app", sandbox.ExecSpec{Args: []string{"true"}}, sandbox.Stdio{}); err != nil || code != 0 {
			b.Fatalf("Exec(true) = %d, %v; want 0", code, err)
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkStartFrom times an instance's start to its container running
// (Create, then Start: the VM, Setup with its identity and drives, the
// container's init and exec) by where its VM comes from:
//
//   - template: a clone of the template, restored for it;
//   - warm: a warm VM (Warm: restored and rehearsed ahead, untimed).
//
// p50-ms is the median.
//
//	go test -run '^$' -bench StartFrom -benchtime 10x ./sandbox/microvm
func BenchmarkStartFrom(b *testing.B) {
	tp := sharedTemplate(b)
	opts := templateOptions(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for _, from := range []string{"template", "warm"} {
		b.Run(from, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				b.StopTimer()
				sb := newSleeper(b, opts)
				if from == "warm" {
					id := sandboxtest.RandomID()
					w, err := Warm(ctx, opts, tp, WarmOptions{Dir: filepath.Join(b.TempDir(), "warm-"+id), CgroupParent: "/cube-test/warm-" + id,
						Program: filepath.Join(vmtest.Image(b).Dir, "bin", "busybox")})
					if err != nil {
						b.Fatal(err)
					}
					if err := UseWarm(sb, w); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				t0 := time.Now()
				if err := sb.Create(ctx); err != nil {
					b.Fatal(err)
				}
				if err := sb.Start(ctx, "app", sandbox.Stdio{}); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				b.StopTimer()
				if r, _ := ReadBootRecord(sb.(*vmSandbox).spec.StateDir); r.From != from {
					b.Fatalf("the vm came from %q, not %q", r.From, from)
				}
				if err := sb.Destroy(context.Background()); err != nil {
					b.Fatalf("Destroy: %v", err)
				}
				b.StartTimer()
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		})
	}
}
