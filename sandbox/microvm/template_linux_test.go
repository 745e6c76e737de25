package microvm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cube-platform/cube/sandbox"
	"github.com/cube-platform/cube/sandbox/microvm/vmtest"
	"github.com/cube-platform/cube/sandbox/sandboxtest"
)

var (
	testTemplateOnce sync.Once
	testTemplate     *Template
	testTemplateErr  error
)

// sharedTemplate is one template of the default test VM size (one vCPU,
// a container of the default memory), built once for the package.
func sharedTemplate(t testing.TB) *Template {
	t.Helper()
	opts := vmtest.Options(t)
	testTemplateOnce.Do(func() {
		vcpus, mib := SizeOf(sandbox.Spec{Containers: []sandbox.ContainerSpec{{}}})
		key, err := TemplateKeyFor(opts, vcpus, mib)
		if err != nil {
			testTemplateErr = err
			return
		}
		root, err := os.MkdirTemp("", "cube-test-templates-")
		if err != nil {
			testTemplateErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		testTemplate, testTemplateErr = BuildTemplate(ctx, opts, key, root, "/cube-test/template-"+key.ID(), nil)
	})
	if testTemplateErr != nil {
		t.Fatalf("BuildTemplate: %v", testTemplateErr)
	}
	return testTemplate
}

// templateOptions are the test VM options with the shared template.
func templateOptions(t testing.TB) sandbox.VMOptions {
	t.Helper()
	tp := sharedTemplate(t)
	o := vmtest.Options(t)
	o.TemplateDir, o.TemplateMemFD = tp.Dir, int(tp.Mem.Fd())
	return o
}

func bootFrom(t *testing.T, spec sandbox.Spec) string {
	t.Helper()
	r, err := ReadBootRecord(spec.StateDir)
	if err != nil {
		t.Fatalf("boot record: %v", err)
	}
	return r.From
}

// TestTemplateConformance runs the sandbox contract against clones of a
// template, as TestConformance does against cold boots.
func TestTemplateConformance(t *testing.T) {
	sandboxtest.Run(t, harness(t, templateOptions(t)))
}

// run starts app in sb and returns its whole output once it exits.
func runToEnd(t *testing.T, ctx context.Context, sb sandbox.Sandbox) string {
	t.Helper()
	var out bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
	if err := sb.Start(ctx, "app", sandbox.Stdio{Stdout: w, Stderr: w}); err != nil {
		t.Fatal(err)
	}
	st, err := sb.Wait(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if st.ExitCode != 0 {
		t.Fatalf("app exited %d: %s", st.ExitCode, out.String())
	}
	return out.String()
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestTemplateClonesDiffer: two clones of one template share no random
// stream, boot id or file. (Their MACs are their CNI interfaces'; the
// end-to-end TestMicroVMTemplateClones checks those, on a network.)
func TestTemplateClonesDiffer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts := templateOptions(t)
	const script = `cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo; ` +
		`echo $$RANDOM > /mine-$HOSTNAME; ls /; cat /proc/uptime`
	var outs []string
	for range 2 {
		sb, spec := createShellVMWith(t, ctx, opts, script)
		out := runToEnd(t, ctx, sb)
		if from := bootFrom(t, spec); from != "template" {
			t.Fatalf("the vm booted %s, not from the template", from)
		}
		outs = append(outs, out)
		t.Logf("clone of %s:\n%s", spec.Hostname, out)
	}
	a, b := strings.Split(outs[0], "\n"), strings.Split(outs[1], "\n")
	if len(a) < 3 || len(b) < 3 {
		t.Fatalf("short output: %q, %q", outs[0], outs[1])
	}
	for i, what := range []string{"boot id", "/dev/urandom"} {
		if a[i] == "" || a[i] == b[i] {
			t.Errorf("both clones have the same %s: %q", what, a[i])
		}
	}
	// Each clone's writable layer is its own: the second does not see the
	// first one's file.
	if strings.Count(outs[1], "mine-") != 1 {
		t.Errorf("the second clone sees another clone's file: %q", outs[1])
	}
}

// TestTemplateFilesRootOnly: a template's files (its memory, the state a
// clone's VMM loads) are the node's alone: a local user who could write
// them would run code in every clone, and one who could read them would
// read the template's memory.
func TestTemplateFilesRootOnly(t *testing.T) {
	tp := sharedTemplate(t)
	entries, err := os.ReadDir(tp.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(tp.Dir); err != nil || st.Mode().Perm()&0o077 != 0 {
		t.Errorf("template dir %s: %v, %v; want 0700", tp.Dir, st.Mode(), err)
	}
	if len(entries) < 4 {
		t.Fatalf("template dir holds %d files; want meta, state, mem and placeholders", len(entries))
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v (%v); want no access for group or others", e.Name(), info.Mode(), err)
		}
	}
}

// TestTemplateFallback: a template that is damaged, unsealed or for
// another size never fails the sandbox: it boots cold and says why.
func TestTemplateFallback(t *testing.T) {
	tp := sharedTemplate(t)
	good := templateOptions(t)
	damaged := t.TempDir()
	for _, f := range []string{templateMeta, templateState} {
		b, err := os.ReadFile(filepath.Join(tp.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == templateState {
			b = bytes.Repeat([]byte{0x5a}, len(b)) // not a migration stream
		}
		if err := os.WriteFile(filepath.Join(damaged, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	unsealed, err := newMemfd("cube-test-unsealed", int64(tp.Key.MemoryMiB)<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer unsealed.Close()
	for _, c := range []struct {
		name string
		edit func(*sandbox.VMOptions)
		want string
	}{
		{"damaged state", func(o *sandbox.VMOptions) { o.TemplateDir = damaged }, "the clone failed"},
		{"unsealed memory", func(o *sandbox.VMOptions) { o.TemplateMemFD = int(unsealed.Fd()) }, "not a sealed memfd"},
		{"missing", func(o *sandbox.VMOptions) { o.TemplateDir = filepath.Join(damaged, "gone") }, "no such file"},
		{"another size", func(o *sandbox.VMOptions) { o.BootTimeout = 0 }, "with other binaries"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			o := good
			c.edit(&o)
			id := sandboxtest.RandomID()
			spec := sandbox.Spec{ID: id, Hostname: "h-" + id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
				Containers: []sandbox.ContainerSpec{sandboxtest.Shell("app", "echo ran")}}
			spec.Containers[0].RootFS = vmtest.Image(t)
			if c.name == "another size" {
				spec.MemoryBytes = 200 << 20
			}
			sb, err := New(spec, sandbox.Options{Logger: sandboxtest.Logger(t), VM: o})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sb.Destroy(context.Background()) })
			if err := sb.Create(ctx); err != nil {
				t.Fatalf("Create failed instead of booting cold: %v", err)
			}
			if out := runToEnd(t, ctx, sb); !strings.Contains(out, "ran") {
				t.Errorf("output %q", out)
			}
			r, err := ReadBootRecord(spec.StateDir)
			if err != nil {
				t.Fatal(err)
			}
			if r.From != "cold" || !strings.Contains(r.Fallback, c.want) {
				t.Errorf("boot record from %q, fallback %q; want cold, with %q", r.From, r.Fallback, c.want)
			}
		})
	}
}
