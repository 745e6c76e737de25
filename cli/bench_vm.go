package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/cube-platform/cube/node"
	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm"
	"github.com/cube-platform/cube/sandbox/microvm/vmm/qemu"
	"github.com/spf13/cobra"
)

// BootResult is the final JSON line of `cube bench boot`.
type BootResult struct {
	Bench string `json:"bench"`
	Accel string `json:"accel"`
	N     int    `json:"n"`
	// Boot: VMM start to the guest agent's first answer.
	P50BootMs float64 `json:"p50_boot_ms"`
	P99BootMs float64 `json:"p99_boot_ms"`
	// Start: the create call's return to Running.
	P50StartMs float64 `json:"p50_start_ms"`
	P99StartMs float64 `json:"p99_start_ms"`
	// VMMOverheadMiB is the VMM's RSS minus the guest memory it touched
	// (median), and VMMPrivateMiB the anonymous part of that overhead:
	// what one more VM costs beyond the pages every QEMU shares.
	VMMOverheadMiB float64 `json:"vmm_overhead_mib"`
	VMMPrivateMiB  float64 `json:"vmm_private_mib"`
	// VMMPSSMiB is the VMM's PSS minus the guest memory it touched
	// (median), read once all N are up: pages the VMMs share count
	// split between them, what the node pays per VM.
	VMMPSSMiB  float64 `json:"vmm_pss_mib"`
	ShimRSSMiB float64 `json:"shim_rss_mib"`
	// Restore: a template's clone, from the VMM's start to agent ready
	// with the instance's identity (its Setup done).
	P50RestoreMs float64 `json:"p50_restore_ms"`
	P99RestoreMs float64 `json:"p99_restore_ms"`
	// StartTemplate: the create call's return to Running, through a
	// template; P50StartMs above is the cold path's.
	P50StartTemplateMs float64 `json:"p50_start_template_ms"`
	P99StartTemplateMs float64 `json:"p99_start_template_ms"`
	// Resume: the node's restore of a suspended VM (the VMM's start to
	// the agent running again with the host's clock); ResumeAPI the
	// resume call's return to Running.
	P50ResumeMs    float64 `json:"p50_resume_ms"`
	P50ResumeAPIMs float64 `json:"p50_resume_api_ms"`
	// Density: the host's MemAvailable lost per idle instance, with the
	// N template starts up, then with the N cold ones.
	DensityTemplateMiB float64 `json:"density_mib_per_instance_template"`
	DensityColdMiB     float64 `json:"density_mib_per_instance_cold"`
	// TemplateFallbacks counts template starts that booted cold instead.
	TemplateFallbacks int `json:"template_fallbacks"`
	// WarmStarts counts the template starts that adopted a warm VM (a
	// clone restored and rehearsed ahead: their restore runs from the
	// adoption's start); the others restored a clone of their own. Each
	// path's start and restore medians follow (0: no such start).
	WarmStarts        int     `json:"warm_starts"`
	P50StartWarmMs    float64 `json:"p50_start_warm_ms"`
	P50StartCloneMs   float64 `json:"p50_start_clone_ms"`
	P50RestoreWarmMs  float64 `json:"p50_restore_warm_ms"`
	P50RestoreCloneMs float64 `json:"p50_restore_clone_ms"`
}

// DensityResult is the final JSON line of `cube bench density`.
type DensityResult struct {
	Bench   string `json:"bench"`
	Accel   string `json:"accel"`
	N       int    `json:"n"`
	Running int    `json:"running"`
	// HostMiBPerInstance is the host's MemAvailable lost per instance
	// with all N template starts idle; PSSMiBPerInstance the proportional
	// set size of each instance's VMM and shim (median).
	HostMiBPerInstance float64 `json:"host_mib_per_instance"`
	PSSMiBPerInstance  float64 `json:"pss_mib_per_instance"`
	P50StartMs         float64 `json:"p50_start_ms"`
	P99StartMs         float64 `json:"p99_start_ms"`
	// The same for cold boots (the fields above are template starts').
	RunningCold            int     `json:"running_cold"`
	HostMiBPerInstanceCold float64 `json:"host_mib_per_instance_cold"`
	PSSMiBPerInstanceCold  float64 `json:"pss_mib_per_instance_cold"`
	P50StartColdMs         float64 `json:"p50_start_cold_ms"`
	P99StartColdMs         float64 `json:"p99_start_cold_ms"`
}

// vmBench is what boot and density share.
type vmBench struct {
	g                 *globals
	runtime, img, mem string
	dataDir           string
	c                 *client.Client
	run               string
	mu                sync.Mutex
	names             []string
}

func (b *vmBench) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&b.runtime, "runtime", v1.RuntimeMicroVM, "runtime to measure (microvm)")
	cmd.Flags().StringVar(&b.img, "image", "busybox", "image to run (already imported or pulled)")
	cmd.Flags().StringVar(&b.mem, "memory", "16Mi", "memory of each instance (its VM gets that plus the agent's overhead)")
	cmd.Flags().StringVar(&b.dataDir, "data-dir", "/var/lib/cube", "cube up's data dir, where the node keeps each VM's boot record (the bench runs on the node, as root)")
}

func (b *vmBench) init(cmd *cobra.Command) error {
	if b.runtime != v1.RuntimeMicroVM {
		return fmt.Errorf("--runtime %q: only microvm boots a VM (use cube bench start for runc)", b.runtime)
	}
	if _, err := os.Stat(filepath.Join(b.dataDir, "node")); err != nil {
		return fmt.Errorf("--data-dir %s: %w (run the bench on the node, as root, with cube up's --data-dir)", b.dataDir, err)
	}
	c, err := b.g.client()
	if err != nil {
		return err
	}
	b.c, b.run = c, fmt.Sprintf("bench-%d", time.Now().Unix()%100000)
	return nil
}

// start creates one idle instance and waits for it to run; it returns the
// instance and the time from the create call's return to Running.
func (b *vmBench) start(ctx context.Context, i int) (*v1.Instance, time.Duration, error) {
	return b.startLabeled(ctx, fmt.Sprintf("%s-%d", b.run, i), nil)
}

// startLabeled is start of an instance named name with more labels.
func (b *vmBench) startLabeled(ctx context.Context, name string, labels map[string]string) (*v1.Instance, time.Duration, error) {
	all := map[string]string{"cube.bench": b.run}
	for k, v := range labels {
		all[k] = v
	}
	in := &v1.Instance{Metadata: v1.ObjectMeta{Name: name, Labels: all},
		Spec: v1.InstanceSpec{RestartPolicy: v1.RestartNever, Runtime: b.runtime, Containers: []v1.Container{{
			Image: b.img, Command: []string{"sleep", "3600"}, Resources: v1.Resources{CPU: "10m", Memory: b.mem}}}}}
	if _, err := b.c.CreateInstance(ctx, in); err != nil {
		return nil, 0, fmt.Errorf("instance %s: %w", name, err)
	}
	t0 := time.Now()
	b.mu.Lock()
	b.names = append(b.names, name)
	b.mu.Unlock()
	got, err := waitFor(ctx, b.c, name, []string{"running"}, 5*time.Minute)
	if err != nil {
		return nil, 0, fmt.Errorf("instance %s: %w", name, err)
	}
	return got, time.Since(t0), nil
}

// waitTemplate waits until in's node has a ready template of in's VM
// size (the first instance of a size queues its build).
func (b *vmBench) waitTemplate(ctx context.Context, in *v1.Instance, size string) error {
	deadline := time.Now().Add(5 * time.Minute)
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		nodes, err := b.c.ListNodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if n.Metadata.Name != in.Status.Node {
				continue
			}
			for _, t := range n.Status.Templates {
				if t.Size != size {
					continue
				}
				if t.State == "ready" {
					return nil
				}
				if strings.HasPrefix(t.State, "failed") {
					return fmt.Errorf("node %s: template %s %s", n.Metadata.Name, size, t.State)
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s has no ready template of %s after 5m (cube nodes shows its templates)", in.Status.Node, size)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay): // the node reports templates with its heartbeat
		}
	}
}

// waitWarm waits up to max until in's node reports a warm VM of size
// ready after more than taken were taken, and says whether it has (and
// how many were taken then).
func (b *vmBench) waitWarm(ctx context.Context, in *v1.Instance, size string, taken int, max time.Duration) (bool, int) {
	deadline := time.Now().Add(max)
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, 500*time.Millisecond) {
		if nodes, err := b.c.ListNodes(ctx); err == nil {
			for _, n := range nodes.Items {
				for _, t := range n.Status.Templates {
					if n.Metadata.Name == in.Status.Node && t.Size == size && t.Warm > 0 && t.WarmTaken >= taken {
						return true, t.WarmTaken
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return false, taken
		}
		select {
		case <-ctx.Done():
			return false, taken
		case <-time.After(delay): // the node reports its warm vms with its heartbeat
		}
	}
}

// bootSample is what one started instance tells.
type bootSample struct {
	in    *v1.Instance
	took  time.Duration
	rec   microvm.BootRecord
	paths node.InstancePaths
}

// startN starts n instances one after another (prefix-0..) with labels.
func (b *vmBench) startN(ctx context.Context, prefix string, n int, labels map[string]string, progress string, before func(last *bootSample)) ([]bootSample, error) {
	var out []bootSample
	for i := 0; i < n; i++ {
		if before != nil {
			var last *bootSample
			if len(out) > 0 {
				last = &out[len(out)-1]
			}
			before(last)
		}
		in, took, err := b.startLabeled(ctx, fmt.Sprintf("%s-%s-%d", b.run, prefix, i), labels)
		if err != nil {
			return nil, err
		}
		p := b.paths(in)
		rec, err := microvm.ReadBootRecord(p.Sandbox)
		if err != nil {
			return nil, fmt.Errorf("instance %s: %w", in.Metadata.Name, err)
		}
		out = append(out, bootSample{in, took, rec, p})
		fmt.Fprintf(b.g.stderr, "\r%s %d/%d", progress, i+1, n)
	}
	fmt.Fprintln(b.g.stderr)
	return out, nil
}

func (b *vmBench) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, name := range b.names {
		_ = b.c.DeleteInstance(ctx, name, true)
	}
	for _, name := range b.names {
		_, _ = b.c.WaitInstance(ctx, name, []string{"deleted"}, 2*time.Minute)
	}
}

func (b *vmBench) paths(in *v1.Instance) node.InstancePaths {
	return node.PathsOf(filepath.Join(b.dataDir, "node"), in.Metadata.UID)
}

// procKB reads the "Key:  N kB" line of a /proc file (status,
// smaps_rollup, meminfo) in KiB.
func procKB(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %s", key, path)
}

func readPid(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func medianF(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64{}, v...)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

func durations(v []time.Duration) []time.Duration {
	s := append([]time.Duration{}, v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func newBenchBootCmd(g *globals) *cobra.Command {
	b := &vmBench{g: g}
	var n int
	cmd := &cobra.Command{
		Use:   "boot --runtime microvm --n N",
		Short: "Time microVM starts from the node's template and cold, suspend/resume, and weigh each VM",
		Long: `Start N idle microvm instances one after another as clones of the node's
template for their VM size (waiting first until the node has it), then N
more that boot their kernel (label cube.dev/vm-boot=cold), keeping all up;
then suspend and resume each template start.

  restore        a clone's VMM start to agent ready with its identity (for
                 a warm VM: from its adoption's start)
  start_template the create call's return to Running, through a template:
                 adopting a warm VM when the node keeps them (each start
                 waits until one is ready), else restoring a clone;
                 warm_starts counts the former, *_warm_ms and *_clone_ms
                 are each path's medians
  boot / start   the same for cold boots (to the agent's first answer)
  resume         the node's restore of a suspended VM; resume_api the
                 resume call's return to Running
  density_*      the host's MemAvailable lost per idle instance

vmm_overhead_mib is a cold VMM's RSS minus the guest memory it touched,
vmm_private_mib the anonymous part of it, vmm_pss_mib its PSS minus the
same. Run it on the node, as root. The instances are removed at the end.
The last line is JSON:
{"bench":"boot","accel":"tcg|kvm","n":N,"p50_boot_ms":…,"p50_restore_ms":…,
 "p50_start_ms":…,"p50_start_template_ms":…,"p50_resume_ms":…,
 "density_mib_per_instance_template":…,"density_mib_per_instance_cold":…}`,
		Example: `  sudo cube bench boot --runtime microvm --n 10`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 {
				return errors.New("--n must be at least 1")
			}
			if err := b.init(cmd); err != nil {
				return err
			}
			defer b.cleanup()
			ctx := cmd.Context()
			memAvail := func() int64 { kb, _ := procKB("/proc/meminfo", "MemAvailable"); return kb }
			mem, err := v1.ParseMemory(b.mem)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			vcpus, mib := microvm.SizeOf(sandbox.Spec{Containers: []sandbox.ContainerSpec{{MilliCPU: 10, MemoryBytes: mem}}})
			size := fmt.Sprintf("%dx%dM", vcpus, mib)
			// The first instance of the size has the node build its template.
			warm, _, err := b.startLabeled(ctx, b.run+"-warmup", nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "waiting for node %s's %s template\n", warm.Status.Node, size)
			if err := b.waitTemplate(ctx, warm, size); err != nil {
				return err
			}
			_ = b.c.DeleteInstance(ctx, warm.Metadata.Name, true)
			_, _ = b.c.WaitInstance(ctx, warm.Metadata.Name, []string{"deleted"}, 2*time.Minute)

			// One start at a time on a node at rest: when the node keeps
			// warm VMs, each template start waits for one to be ready
			// (a create while the node still warms the last one's
			// replacement restores a clone of its own).
			warmWait, taken := b.waitWarm(ctx, warm, size, 0, time.Minute)
			if warmWait {
				fmt.Fprintf(g.stderr, "node %s keeps warm vms of %s: each template start waits for one\n", warm.Status.Node, size)
			}
			base := memAvail()
			tmpl, err := b.startN(ctx, "tmpl", n, nil, "template starts", func(last *bootSample) {
				if !warmWait {
					return
				}
				if last != nil && last.rec.From == microvm.FromWarm {
					taken++ // the last start took one: wait for its replacement
				}
				_, taken = b.waitWarm(ctx, warm, size, taken, time.Minute)
			})
			if err != nil {
				return err
			}
			withTemplates := memAvail()
			cold, err := b.startN(ctx, "cold", n, map[string]string{v1.LabelVMBoot: v1.VMBootCold}, "cold starts", nil)
			if err != nil {
				return err
			}
			withCold := memAvail()

			var boots, starts, restores, tstarts, resumes, resumeAPI []time.Duration
			var overheads, privates, shims, psses []float64
			fallbacks := 0
			accel := ""
			msd := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
			for _, c := range cold {
				accel = c.in.Status.Accelerator
				boots, starts = append(boots, msd(c.rec.BootMs)), append(starts, c.took)
				if u, err := qemu.ReadMemoryUsage(c.rec.VMMPid, c.rec.GuestMiB); err == nil {
					overheads = append(overheads, float64(u.Overhead())/(1<<20))
					privates = append(privates, float64(u.Anon-u.Guest)/(1<<20))
					psses = append(psses, float64(u.PSSOverhead())/(1<<20))
				}
				if pid, err := readPid(c.paths.ShimPid); err == nil {
					if kb, err := procKB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS"); err == nil {
						shims = append(shims, float64(kb)/1024)
					}
				}
			}
			var warmStarts, cloneStarts, warmRestores, cloneRestores []time.Duration
			for _, t := range tmpl {
				switch t.rec.From {
				case "warm":
					warmStarts, warmRestores = append(warmStarts, t.took), append(warmRestores, msd(t.rec.ReadyMs))
				case "template":
					cloneStarts, cloneRestores = append(cloneStarts, t.took), append(cloneRestores, msd(t.rec.ReadyMs))
				default:
					fallbacks++
					continue
				}
				restores, tstarts = append(restores, msd(t.rec.ReadyMs)), append(tstarts, t.took)
			}
			// Suspend and resume each template start.
			for i, t := range tmpl {
				name := t.in.Metadata.Name
				if _, err := b.c.SuspendInstance(ctx, name); err != nil {
					return fmt.Errorf("suspend %s: %w", name, err)
				}
				if _, err := waitFor(ctx, b.c, name, []string{"suspended"}, 2*time.Minute); err != nil {
					return err
				}
				if _, err := b.c.ResumeInstance(ctx, name); err != nil {
					return fmt.Errorf("resume %s: %w", name, err)
				}
				t0 := time.Now()
				if _, err := waitFor(ctx, b.c, name, []string{"running"}, 2*time.Minute); err != nil {
					return err
				}
				resumeAPI = append(resumeAPI, time.Since(t0))
				if rec, err := microvm.ReadBootRecord(t.paths.Sandbox); err == nil && rec.ResumeMs > 0 {
					resumes = append(resumes, msd(rec.ResumeMs))
				}
				fmt.Fprintf(g.stderr, "\rsuspend/resume %d/%d", i+1, n)
			}
			fmt.Fprintln(g.stderr)
			perInstance := func(before, after int64) float64 { return round1(float64(before-after) / 1024 / float64(n)) }
			sb, ss := durations(boots), durations(starts)
			sr, st, sres, sapi := durations(restores), durations(tstarts), durations(resumes), durations(resumeAPI)
			res := BootResult{Bench: "boot", Accel: accel, N: n,
				P50BootMs: ms(percentile(sb, 50)), P99BootMs: ms(percentile(sb, 99)),
				P50StartMs: ms(percentile(ss, 50)), P99StartMs: ms(percentile(ss, 99)),
				VMMOverheadMiB: round1(medianF(overheads)), VMMPrivateMiB: round1(medianF(privates)), VMMPSSMiB: round1(medianF(psses)),
				ShimRSSMiB:   round1(medianF(shims)),
				P50RestoreMs: ms(percentile(sr, 50)), P99RestoreMs: ms(percentile(sr, 99)),
				P50StartTemplateMs: ms(percentile(st, 50)), P99StartTemplateMs: ms(percentile(st, 99)),
				P50ResumeMs: ms(percentile(sres, 50)), P50ResumeAPIMs: ms(percentile(sapi, 50)),
				DensityTemplateMiB: perInstance(base, withTemplates), DensityColdMiB: perInstance(withTemplates, withCold),
				TemplateFallbacks: fallbacks, WarmStarts: len(warmStarts),
				P50StartWarmMs: ms(percentile(durations(warmStarts), 50)), P50StartCloneMs: ms(percentile(durations(cloneStarts), 50)),
				P50RestoreWarmMs: ms(percentile(durations(warmRestores), 50)), P50RestoreCloneMs: ms(percentile(durations(cloneRestores), 50))}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "PATH\tN\tACCEL\tVM READY P50\tVM READY P99\tSTART P50\tSTART P99\tHOST MEM/INSTANCE")
			fmt.Fprintf(tw, "template\t%d\t%s\t%.1fms\t%.1fms\t%.1fms\t%.1fms\t%.1fMiB\n", n-fallbacks, accel, res.P50RestoreMs, res.P99RestoreMs,
				res.P50StartTemplateMs, res.P99StartTemplateMs, res.DensityTemplateMiB)
			fmt.Fprintf(tw, "cold\t%d\t%s\t%.1fms\t%.1fms\t%.1fms\t%.1fms\t%.1fMiB\n", n, accel, res.P50BootMs, res.P99BootMs,
				res.P50StartMs, res.P99StartMs, res.DensityColdMiB)
			_ = tw.Flush()
			fmt.Fprintf(g.stdout, "template starts: %d adopted a warm vm (start p50 %.1fms, ready %.1fms), %d restored a clone (start p50 %.1fms, ready %.1fms)\n",
				res.WarmStarts, res.P50StartWarmMs, res.P50RestoreWarmMs, len(cloneStarts), res.P50StartCloneMs, res.P50RestoreCloneMs)
			fmt.Fprintf(g.stdout, "resume p50 %.1fms (node), %.1fms (API to Running); cold VMM overhead %.1f MiB (private %.1f, PSS %.1f), shim RSS %.1f MiB\n",
				res.P50ResumeMs, res.P50ResumeAPIMs, res.VMMOverheadMiB, res.VMMPrivateMiB, res.VMMPSSMiB, res.ShimRSSMiB)
			out, _ := json.Marshal(res)
			fmt.Fprintln(g.stdout, string(out))
			return nil
		},
	}
	b.flags(cmd)
	cmd.Flags().IntVar(&n, "n", 10, "number of instances")
	return cmd
}

func newBenchDensityCmd(g *globals) *cobra.Command {
	b := &vmBench{g: g}
	var n, parallel int
	cmd := &cobra.Command{
		Use:   "density --runtime microvm --n N",
		Short: "Run N idle microVM instances at once, from templates and cold, and weigh them",
		Long: `Start N idle microvm instances, --parallel at a time, as clones of the node's
template (waiting first until the node has one of their size), keep them all
running and weigh them; remove them; then the same with N cold boots (label
cube.dev/vm-boot=cold). For each path it reports the host memory each
instance costs (MemAvailable lost, divided by N, and the median PSS of each
instance's VMM and shim) and the start p50 at that load. Run it on the node,
as root. The last line is JSON:
{"bench":"density","accel":…,"n":N,"running":R,"host_mib_per_instance":…,
 "pss_mib_per_instance":…,"p50_start_ms":…,"host_mib_per_instance_cold":…,
 "pss_mib_per_instance_cold":…,"p50_start_cold_ms":…}
(the first three are the template path's).`,
		Example: `  sudo cube bench density --runtime microvm --n 50`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || parallel < 1 {
				return errors.New("--n and --parallel must be at least 1")
			}
			if err := b.init(cmd); err != nil {
				return err
			}
			defer b.cleanup()
			ctx := cmd.Context()
			mem, err := v1.ParseMemory(b.mem)
			if err != nil {
				return fmt.Errorf("--memory: %w", err)
			}
			vcpus, mib := microvm.SizeOf(sandbox.Spec{Containers: []sandbox.ContainerSpec{{MilliCPU: 10, MemoryBytes: mem}}})
			warm, _, err := b.startLabeled(ctx, b.run+"-warmup", nil)
			if err != nil {
				return err
			}
			if err := b.waitTemplate(ctx, warm, fmt.Sprintf("%dx%dM", vcpus, mib)); err != nil {
				return err
			}
			b.cleanup()
			b.names = nil
			tmpl, err := b.densityPhase(ctx, "tmpl", n, parallel, nil)
			if err != nil {
				return err
			}
			b.cleanup()
			b.names = nil
			cold, err := b.densityPhase(ctx, "cold", n, parallel, map[string]string{v1.LabelVMBoot: v1.VMBootCold})
			if err != nil {
				return err
			}
			res := DensityResult{Bench: "density", Accel: tmpl.accel, N: n, Running: tmpl.running,
				HostMiBPerInstance: tmpl.host, PSSMiBPerInstance: tmpl.pss, P50StartMs: tmpl.p50, P99StartMs: tmpl.p99,
				RunningCold: cold.running, HostMiBPerInstanceCold: cold.host, PSSMiBPerInstanceCold: cold.pss,
				P50StartColdMs: cold.p50, P99StartColdMs: cold.p99}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "PATH\tN\tRUNNING\tACCEL\tHOST MEM/INSTANCE\tPSS/INSTANCE\tSTART P50\tSTART P99")
			for _, r := range []struct {
				name string
				p    densityOf
			}{{"template", tmpl}, {"cold", cold}} {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.1fMiB\t%.1fMiB\t%.1fms\t%.1fms\n", r.name, n, r.p.running, r.p.accel, r.p.host, r.p.pss, r.p.p50, r.p.p99)
			}
			_ = tw.Flush()
			out, _ := json.Marshal(res)
			fmt.Fprintln(g.stdout, string(out))
			return nil
		},
	}
	b.flags(cmd)
	cmd.Flags().IntVar(&n, "n", 50, "number of instances of each path")
	cmd.Flags().IntVar(&parallel, "parallel", 2, "instances started at a time (every VM boot takes a core under TCG)")
	return cmd
}

// densityOf is one path's weighing.
type densityOf struct {
	running   int
	accel     string
	host, pss float64
	p50, p99  float64
}

// densityPhase starts n instances, parallel at a time, with labels, and
// weighs them once all are up.
func (b *vmBench) densityPhase(ctx context.Context, prefix string, n, parallel int, labels map[string]string) (densityOf, error) {
	var d densityOf
	before, err := procKB("/proc/meminfo", "MemAvailable")
	if err != nil {
		return d, err
	}
	var mu sync.Mutex
	var starts []time.Duration
	var ins []*v1.Instance
	var firstErr error
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			in, took, err := b.startLabeled(ctx, fmt.Sprintf("%s-%s-%d", b.run, prefix, i), labels)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			starts, ins = append(starts, took), append(ins, in)
			fmt.Fprintf(b.g.stderr, "\r%s: %d/%d running", prefix, len(ins), n)
		}()
	}
	wg.Wait()
	fmt.Fprintln(b.g.stderr)
	if firstErr != nil {
		return d, firstErr
	}
	after, err := procKB("/proc/meminfo", "MemAvailable")
	if err != nil {
		return d, err
	}
	var psses []float64
	for _, in := range ins {
		cur, err := b.c.GetInstance(ctx, in.Metadata.Name)
		if err != nil || cur.Status.Phase != v1.PhaseRunning {
			continue
		}
		d.running++
		d.accel = cur.Status.Accelerator
		p := b.paths(cur)
		var kb int64
		if rec, err := microvm.ReadBootRecord(p.Sandbox); err == nil {
			if v, err := procKB(fmt.Sprintf("/proc/%d/smaps_rollup", rec.VMMPid), "Pss"); err == nil {
				kb += v
			}
		}
		if pid, err := readPid(p.ShimPid); err == nil {
			if v, err := procKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss"); err == nil {
				kb += v
			}
		}
		psses = append(psses, float64(kb)/1024)
	}
	ss := durations(starts)
	d.host = round1(float64(before-after) / 1024 / float64(n))
	d.pss = round1(medianF(psses))
	d.p50, d.p99 = ms(percentile(ss, 50)), ms(percentile(ss, 99))
	return d, nil
}
