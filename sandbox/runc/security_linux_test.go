package runc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/sandbox"
)

// sysprobe builds testdata/sysprobe (static) once and copies it into the
// shared test image as /bin/sysprobe; it returns the host copy.
var sysprobe = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "cube-sysprobe-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "sysprobe")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/sysprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build sysprobe: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(testRootFS, "bin", "sysprobe"), b, 0o755); err != nil {
		return "", err
	}
	return bin, nil
})

func requireSysprobe(t *testing.T) string {
	t.Helper()
	requireRunc(t)
	bin, err := sysprobe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(bin)) })
	return bin
}

// parseProbe turns sysprobe's "name errno" lines into a map.
func parseProbe(t *testing.T, out string) map[string]int {
	t.Helper()
	got := map[string]int{}
	for line := range strings.Lines(out) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("sysprobe line %q: %v", line, err)
		}
		got[name] = n
	}
	return got
}

// escapeSyscalls are what sysprobe tries that the sandbox must refuse with
// EPERM: Docker's default seccomp profile (user namespaces, keyrings,
// mounts, bpf, perf, kexec, file handles) and the missing CAP_NET_RAW (raw
// and packet sockets).
var escapeSyscalls = []string{
	"unshare-user", "keyctl", "add_key", "bpf", "perf_event_open", "kexec_load",
	"open_by_handle_at", "raw-socket", "packet-socket", "mount", "umount",
}

// TestSeccompAndCapsRefuseEscapes runs the syscalls of a container escape
// for real, in a container and in an exec'd process, and checks each is
// refused with EPERM while an ordinary socket still works. The positive
// control runs the same probe on the host, where none of them answers
// EPERM: the refusal is the sandbox's doing.
func TestSeccompAndCapsRefuseEscapes(t *testing.T) {
	host := requireSysprobe(t)
	out, err := exec.Command(host, "host").Output()
	if err != nil {
		t.Fatalf("sysprobe on the host: %v", err)
	}
	for name, errno := range parseProbe(t, string(out)) {
		if errno == int(unix.EPERM) {
			t.Errorf("on the host %s = EPERM; the probe cannot tell the sandbox's refusal apart", name)
		}
	}

	sb, _ := newTestSandbox(t, sandbox.ContainerSpec{Name: "probe", Args: []string{"sysprobe"}}, shell("idle", "sleep 1000"))
	ctx := testCtx(t)
	st, stdout, stderr := runToExit(t, sb, "probe")
	if st.ExitCode != 0 {
		t.Fatalf("sysprobe in a container: exit %d, stderr %q", st.ExitCode, stderr)
	}
	if err := sb.Start(ctx, "idle", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	var execOut syncBuffer
	if code, err := sb.Exec(ctx, "idle", sandbox.ExecSpec{Args: []string{"sysprobe"}}, sandbox.Stdio{Stdout: &execOut}); err != nil || code != 0 {
		t.Fatalf("Exec(sysprobe) = %d, %v", code, err)
	}
	for where, out := range map[string]string{"container": stdout, "exec": execOut.String()} {
		got := parseProbe(t, out)
		for _, name := range escapeSyscalls {
			if errno, ok := got[name]; !ok || errno != int(unix.EPERM) {
				t.Errorf("%s: %s = %d (present %v); want EPERM (%d)", where, name, errno, ok, unix.EPERM)
			}
		}
		if got["tcp-socket"] != 0 {
			t.Errorf("%s: an ordinary TCP socket failed with errno %d; the filter is too tight", where, got["tcp-socket"])
		}
		// ping without CAP_NET_RAW: an ICMP datagram socket, allowed by
		// the sandbox's net.ipv4.ping_group_range.
		if errno, ok := got["icmp-dgram-socket"]; !ok || errno != 0 {
			t.Errorf("%s: an ICMP datagram socket (unprivileged ping) failed with errno %d (present %v); want it allowed", where, errno, ok)
		}
	}
	// And the shell tool a tenant would reach for.
	var unshareErr syncBuffer
	code, err := sb.Exec(ctx, "idle", sandbox.ExecSpec{Args: []string{"unshare", "-U", "true"}}, sandbox.Stdio{Stderr: &unshareErr})
	if err != nil || code == 0 || !strings.Contains(unshareErr.String(), "not permitted") {
		t.Errorf("unshare -U = %d, %v, stderr %q; want a failure 'Operation not permitted'", code, err, unshareErr.String())
	}
}

// wantCapEff is the effective capability mask of a root process in the
// sandbox: defaultCaps, in which CAP_NET_RAW is not.
func wantCapEff(t *testing.T) uint64 {
	bits := map[string]int{
		"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_FSETID": unix.CAP_FSETID,
		"CAP_FOWNER": unix.CAP_FOWNER, "CAP_MKNOD": unix.CAP_MKNOD, "CAP_SETGID": unix.CAP_SETGID,
		"CAP_SETUID": unix.CAP_SETUID, "CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_SETPCAP": unix.CAP_SETPCAP,
		"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT,
		"CAP_KILL": unix.CAP_KILL, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	}
	var mask uint64
	for _, c := range defaultCaps {
		b, ok := bits[c]
		if !ok {
			t.Fatalf("capability %s of defaultCaps is not in the test's table", c)
		}
		mask |= 1 << b
	}
	if mask&(1<<unix.CAP_NET_RAW) != 0 {
		t.Fatal("defaultCaps holds CAP_NET_RAW")
	}
	return mask
}

// statusField returns the value of a "Name:\tvalue" line of /proc/PID/status.
func statusField(status, name string) string {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestNoNewPrivsAndCapsOfEveryProcess reads /proc/self/status in a
// container and in an exec'd process: no_new_privs is set, seccomp filters
// (mode 2), and the effective set is Docker's without CAP_NET_RAW.
func TestNoNewPrivsAndCapsOfEveryProcess(t *testing.T) {
	sb, _ := newTestSandbox(t, shell("c", "cat /proc/self/status"), shell("idle", "sleep 1000"))
	ctx := testCtx(t)
	_, fromInit, _ := runToExit(t, sb, "c")
	if err := sb.Start(ctx, "idle", sandbox.Stdio{}); err != nil {
		t.Fatal(err)
	}
	var fromExec syncBuffer
	if code, err := sb.Exec(ctx, "idle", sandbox.ExecSpec{Args: []string{"cat", "/proc/self/status"}}, sandbox.Stdio{Stdout: &fromExec}); err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	want := fmt.Sprintf("%016x", wantCapEff(t))
	for where, status := range map[string]string{"container": fromInit, "exec": fromExec.String()} {
		if got := statusField(status, "NoNewPrivs"); got != "1" {
			t.Errorf("%s: NoNewPrivs = %q; want 1", where, got)
		}
		if got := statusField(status, "Seccomp"); got != "2" {
			t.Errorf("%s: Seccomp = %q; want 2 (filter)", where, got)
		}
		for _, set := range []string{"CapEff", "CapPrm", "CapBnd"} {
			if got := statusField(status, set); got != want {
				t.Errorf("%s: %s = %q; want %s (Docker's set without CAP_NET_RAW)", where, set, got, want)
			}
		}
	}
}

// TestMaskedAndReadonlyPaths reads every masked path (empty: /dev/null or
// an empty tmpfs) and writes to the read-only ones (refused), with
// /proc/self/status and the host's /proc/interrupts as the controls that
// the paths would otherwise have content.
func TestMaskedAndReadonlyPaths(t *testing.T) {
	if b, err := os.ReadFile("/proc/interrupts"); err != nil || len(b) == 0 {
		t.Fatalf("host /proc/interrupts: %d bytes, %v; the control needs it", len(b), err)
	}
	var script strings.Builder
	script.WriteString(`[ -n "$(head -c 1 /proc/self/status)" ] && echo control-ok; `)
	for _, p := range maskedPaths() {
		// A file reads empty; a directory lists nothing.
		fmt.Fprintf(&script, `if [ -d %[1]s ]; then [ -z "$(ls -A %[1]s)" ] || echo unmasked %[1]s; elif [ -e %[1]s ]; then [ -z "$(head -c 1 %[1]s 2>/dev/null)" ] || echo unmasked %[1]s; fi; `, p)
	}
	for _, p := range []string{"/proc/sysrq-trigger", "/proc/sys/kernel/domainname", "/proc/sys/vm/drop_caches"} {
		fmt.Fprintf(&script, `(echo x > %[1]s) 2>/dev/null && echo writable %[1]s; `, p)
	}
	for _, p := range readonlyPaths {
		fmt.Fprintf(&script, `[ ! -e %[1]s ] || grep -q " %[1]s ro[, ]" /proc/self/mountinfo || echo not-readonly %[1]s; `, p)
	}
	sb, _ := newTestSandbox(t, shell("c", script.String()))
	st, out, errOut := runToExit(t, sb, "c")
	if st.ExitCode != 0 || strings.TrimSpace(out) != "control-ok" {
		t.Errorf("exit %d, output %q (stderr %q); want only control-ok", st.ExitCode, out, errOut)
	}
}

// TestHostileImagePasswd gives a container a USER without a gid on images
// whose /etc/passwd is a link to a host file (absolute, or climbing out)
// or a FIFO: Create fails at once with an error naming the image file,
// never hangs, and never reads the host file.
func TestHostileImagePasswd(t *testing.T) {
	requireRunc(t)
	secret := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(secret, []byte("nobody:x:65534:4242:HOST-SECRET:/:/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, plant := range map[string]func(passwd string) error{
		"absolute link": func(p string) error { return os.Symlink(secret, p) },
		"relative link": func(p string) error { return os.Symlink("../../../../../../../../.."+secret, p) },
		"fifo":          func(p string) error { return unix.Mkfifo(p, 0o644) },
	} {
		t.Run(name, func(t *testing.T) {
			rootfs := t.TempDir()
			if err := os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := plant(filepath.Join(rootfs, "etc", "passwd")); err != nil {
				t.Fatal(err)
			}
			id := randomID(t)
			spec := sandbox.Spec{
				ID: id, StateDir: filepath.Join(t.TempDir(), "state"), CgroupParent: "/cube-test/" + id,
				Containers: []sandbox.ContainerSpec{{Name: "c", RootFS: sandbox.RootFS{Dir: rootfs}, Args: []string{"id"}, User: "65534"}},
			}
			sb, err := New(spec, Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sb.Destroy(context.Background()) })
			done := make(chan error, 1)
			go func() { done <- sb.Create(testCtx(t)) }()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Create blocked on the image's /etc/passwd")
			}
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "/etc/passwd") || strings.Contains(err.Error(), "HOST-SECRET") {
				t.Errorf("Create = %v; want errdefs.ErrInvalid naming /etc/passwd, without the host file", err)
			}
		})
	}
}

// TestSeccompArchitectures: the filter covers the native ABI and i386 with
// Docker's rules, and leaves x32 out (refused outright).
func TestSeccompArchitectures(t *testing.T) {
	spec, err := ociSpec(sandbox.Spec{ID: "x", CgroupParent: "/x"}, sandbox.ContainerSpec{Name: "c", Args: []string{"true"}}, sharedFiles{}, false)
	if err != nil {
		t.Fatal(err)
	}
	sec := spec.Linux.Seccomp
	if sec == nil || sec.DefaultAction != specs.ActErrno || len(sec.Syscalls) < 10 {
		t.Fatalf("seccomp = %+v; want Docker's profile", sec)
	}
	if runtime.GOARCH == "amd64" && !slices.Equal(sec.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86}) {
		t.Errorf("architectures = %v; want x86_64 and x86 without x32", sec.Architectures)
	}
}
