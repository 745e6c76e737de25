package agent

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/guest/agentapi"
)

func startSleeper(t *testing.T, vm *testVM, specs ...*agentapi.ContainerSpec) {
	t.Helper()
	if len(specs) == 0 {
		specs = []*agentapi.ContainerSpec{sh("app", "exec sleep 1000")}
	}
	if err := vm.c.Setup(ctx(t), baseSetup(specs...)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), specs[0].Name); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// TestExecPipes: an exec without a TTY gets its stdin, and its stdout,
// stderr and exit code come back apart.
func TestExecPipes(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm)
	p := agentapi.Process{Container: "app", ExecID: "e1"}
	err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "e1"},
		Args: []string{"sh", "-c", "read line; echo got:$line; echo oops >&2; exit 7"}, Env: []string{"PATH=/bin"}, Stdin: true})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if _, err := vm.c.WriteStdin(ctx(t), p, []byte("hello\n")); err != nil {
		t.Fatalf("WriteStdin: %v", err)
	}
	if err := vm.c.CloseStdin(ctx(t), p); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT); got != "got:hello\n" {
		t.Errorf("exec stdout = %q; want %q", got, "got:hello\n")
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDERR); got != "oops\n" {
		t.Errorf("exec stderr = %q; want %q", got, "oops\n")
	}
	if st, err := vm.c.Wait(ctx(t), p); err != nil || st.Code != 7 {
		t.Errorf("Wait(exec) = %+v, %v; want exit 7", st, err)
	}
	// The exec ran in the container: its namespace's PID 1 is the init.
	err = vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "e2"},
		Args: []string{"cat", "/proc/1/cmdline"}})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if got := readAll(t, vm, agentapi.Process{Container: "app", ExecID: "e2"}, agentapi.Stream_STREAM_STDOUT); !strings.HasPrefix(got, "cube-init:app") {
		t.Errorf("exec sees PID 1 %q; want the container's init", got)
	}
	err = vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "e1"}, Args: []string{"true"}})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("Exec(reused id) = %v; want ErrAlreadyExists", err)
	}
}

// TestExecTTY: an exec with a TTY runs on a real terminal of the size
// asked, resizes, and reads what the host types.
func TestExecTTY(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm)
	p := agentapi.Process{Container: "app", ExecID: "tty1"}
	err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "tty1"},
		Args: []string{"sh", "-c", "test -t 0 && echo isatty; stty size; read x; stty size; echo typed:$x"}, Env: []string{"PATH=/bin"},
		Tty: true, Stdin: true, Rows: 24, Cols: 80})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	var out strings.Builder
	readUntil := func(want string) {
		t.Helper()
		for !strings.Contains(out.String(), want) {
			b, err := vm.c.ReadOutput(ctx(t), p, agentapi.Stream_STREAM_STDOUT, uint64(out.Len()), 0)
			if err != nil {
				t.Fatalf("ReadOutput: %v (so far %q; want %q)", err, out.String(), want)
			}
			out.Write(b)
		}
	}
	readUntil("24 80")
	if err := vm.c.ResizePty(ctx(t), p, 40, 120); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	if _, err := vm.c.WriteStdin(ctx(t), p, []byte("abc\n")); err != nil {
		t.Fatalf("WriteStdin: %v", err)
	}
	readUntil("typed:abc")
	got := out.String()
	for _, want := range []string{"isatty", "24 80", "40 120", "typed:abc"} {
		if !strings.Contains(got, want) {
			t.Errorf("tty output lacks %q: %q", want, got)
		}
	}
	if st, err := vm.c.Wait(ctx(t), p); err != nil || st.Code != 0 {
		t.Errorf("Wait(tty exec) = %+v, %v; want exit 0", st, err)
	}
	if b, err := vm.c.ReadOutput(ctx(t), p, agentapi.Stream_STREAM_STDERR, 0, 0); err != io.EOF {
		t.Errorf("stderr of a tty exec = %q, %v; want EOF", b, err)
	}
}

// TestSignal: a signal reaches the container's process and Wait says
// which one ended it; the container restarts afterwards.
func TestSignal(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm)
	p := agentapi.Process{Container: "app"}
	// Wait blocks in the agent while other calls go on (ttRPC serves
	// calls concurrently): a Wait made first sees the signal's effect.
	type waited struct {
		st  agentapi.ExitStatus
		err error
	}
	wc := make(chan waited, 1)
	go func() {
		st, err := vm.c.Wait(ctx(t), p)
		wc <- waited{st, err}
	}()
	if _, err := vm.c.State(ctx(t)); err != nil {
		t.Fatalf("State: %v", err)
	}
	if err := vm.c.Signal(ctx(t), p, syscall.SIGTERM); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	w := <-wc
	st, err := w.st, w.err
	if err != nil || st.Signal != syscall.SIGTERM || st.Code != 128+15 {
		t.Fatalf("Wait = %+v, %v; want ended by SIGTERM (143)", st, err)
	}
	if err := vm.c.Signal(ctx(t), p, syscall.SIGTERM); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Signal(exited) = %v; want ErrNotFound", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	states, err := vm.c.State(ctx(t))
	if err != nil || len(states) != 1 || states[0].Status != agentapi.Status_STATUS_RUNNING {
		t.Errorf("State after restart = %+v, %v; want app running", states, err)
	}
}

// TestOOMKilled: a container that outgrows its memory limit is killed by
// the OOM killer (not its init), and Wait says so.
func TestOOMKilled(t *testing.T) {
	vm := startAgent(t)
	spec := sh("app", "dd if=/dev/zero of=/dev/null bs=96M count=1; echo survived")
	spec.MemoryBytes = 32 << 20
	if err := vm.c.Setup(ctx(t), baseSetup(spec)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	p := agentapi.Process{Container: "app"}
	out := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT)
	st, err := vm.c.Wait(ctx(t), p)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if !st.OOMKilled {
		t.Errorf("Wait = %+v (stdout %q); want OOMKilled", st, out)
	}
}

// TestZombiesReaped: a process orphaned inside the container is adopted
// by the container's init and reaped when it exits: no zombie is left.
func TestZombiesReaped(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm)
	p := agentapi.Process{Container: "app", ExecID: "orphan"}
	// The shell exits at once; its sleep outlives it, orphaned.
	err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "orphan"},
		Args: []string{"sh", "-c", "sleep 0.3 >/dev/null 2>&1 </dev/null & echo $!"}, Env: []string{"PATH=/bin"}})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	out := strings.TrimSpace(readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT))
	if _, err := strconv.Atoi(out); err != nil {
		t.Fatalf("exec printed %q; want the orphan's pid", out)
	}
	if _, err := vm.c.Wait(ctx(t), p); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	// Find the container's init on the host: the child of the agent
	// whose command line says so.
	initPid := findPid(t, "cube-init:app")
	sawOrphan := false
	deadline := time.Now().Add(testTimeout)
	for {
		kids := children(initPid)
		zombie, sleeping := false, false
		for _, k := range kids {
			if k.state == "Z" {
				zombie = true
			}
			if k.comm == "sleep" && k.state != "Z" {
				sleeping = true
			}
		}
		// The main process (sleep 1000) is the init's child too.
		orphanAlive := 0
		for _, k := range kids {
			if k.comm == "sleep" {
				orphanAlive++
			}
		}
		if orphanAlive >= 2 {
			sawOrphan = true
		}
		if !zombie && orphanAlive == 1 && sleeping {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("children of the container init after the orphan exited: %+v; want only the main process, no zombie", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawOrphan {
		t.Logf("the orphan exited before the first look; no zombie was left either way")
	}
}

type proc struct {
	pid         int
	comm, state string
}

func findPid(t *testing.T, cmdline string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.TrimRight(string(b), "\x00") == cmdline {
			return pid
		}
	}
	t.Fatalf("no process %q", cmdline)
	return 0
}

// children lists the processes whose parent is pid, zombies included.
func children(pid int) []proc {
	var out []proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(s[close+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == pid {
			p, _ := strconv.Atoi(e.Name())
			out = append(out, proc{pid: p, comm: s[open+1 : close], state: f[0]})
		}
	}
	return out
}

// TestMalformedRequests: requests that break the API's bounds, or are not
// even protobuf, are refused with an error, and the agent keeps serving.
func TestMalformedRequests(t *testing.T) {
	vm := startAgent(t)
	if err := vm.c.Setup(ctx(t), baseSetup(sh("app", "sleep 1000"))); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	// A second connection, as a hostile or buggy host would speak: the
	// generated client, no validation on this side.
	raw := rawClient(t, vm)
	svc := agentapi.NewAgentClient(raw)
	huge := make([]string, agentapi.MaxArgs+1)
	for i := range huge {
		huge[i] = "x"
	}
	bad := []struct {
		name string
		call func() error
	}{
		{"too many args", func() error {
			_, err := svc.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "x"}, Args: huge})
			return err
		}},
		{"path as a name", func() error {
			_, err := svc.Start(ctx(t), &agentapi.StartRequest{Container: "../../etc"})
			return err
		}},
		{"signal 0", func() error {
			_, err := svc.Signal(ctx(t), &agentapi.SignalRequest{Process: &agentapi.ProcessRef{Container: "app"}, Signal: 0})
			return err
		}},
		{"huge read", func() error {
			_, err := svc.ReadOutput(ctx(t), &agentapi.ReadOutputRequest{Process: &agentapi.ProcessRef{Container: "app"}, Stream: agentapi.Stream_STREAM_STDOUT, MaxBytes: 1 << 30})
			return err
		}},
		{"not protobuf", func() error { return rawCall(t, vm, "Setup", []byte("\xff\xff\xff\xff")) }},
		{"second setup, raw", func() error {
			b, _ := proto.Marshal(baseSetup(sh("evil", "true")))
			return rawCall(t, vm, "Setup", b)
		}},
		{"unknown method", func() error {
			return raw.Call(ctx(t), "cube.agent.v1.Agent", "Debug", &agentapi.Empty{}, &agentapi.Empty{})
		}},
	}
	for _, b := range bad {
		if err := b.call(); err == nil {
			t.Errorf("%s: accepted; want an error", b.name)
		}
	}
	// A frame with a length past ttRPC's limit: the agent drops that
	// connection, not itself.
	conn := rawConn(t, vm)
	hdr := make([]byte, 10)
	binary.BigEndian.PutUint32(hdr[0:4], 64<<20)
	binary.BigEndian.PutUint32(hdr[4:8], 1)
	hdr[8] = 1
	conn.Write(hdr)
	conn.Close()
	if _, err := vm.c.Hello(ctx(t)); err != nil {
		t.Fatalf("Hello after malformed requests: %v; want the agent serving", err)
	}
}

// rawCall sends one request frame whose payload is b, as is, and
// returns the agent's answer as an error (nil for OK).
func rawCall(t *testing.T, vm *testVM, method string, b []byte) error {
	t.Helper()
	conn := rawConn(t, vm)
	req, err := proto.Marshal(&ttrpc.Request{Service: "cube.agent.v1.Agent", Method: method, Payload: b})
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 10)
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(req)))
	binary.BigEndian.PutUint32(hdr[4:8], 1)
	hdr[8] = 1 // request
	conn.SetDeadline(time.Now().Add(testTimeout))
	if _, err := conn.Write(append(hdr, req...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, hdr); err != nil {
		t.Fatalf("read the answer to a raw %s: %v", method, err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[0:4]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(body, &resp); err != nil {
		t.Fatalf("the agent's answer is not a ttRPC response: %v", err)
	}
	if resp.Status.GetCode() != 0 {
		return errors.New(resp.Status.GetMessage())
	}
	return nil
}

func rawClient(t *testing.T, vm *testVM) *ttrpc.Client {
	t.Helper()
	return ttrpc.NewClient(rawConn(t, vm))
}

func rawConn(t *testing.T, vm *testVM) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", vm.sock)
	if err != nil {
		t.Fatalf("second connection to the agent: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestExecUser: an exec runs as the uid and gid asked, and a container
// restart keeps what the container wrote on the writable drive.
func TestExecUser(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm, sh("app", "echo kept >> /data; exec sleep 1000"))
	p := agentapi.Process{Container: "app", ExecID: "id"}
	err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "id"},
		Args: []string{"sh", "-c", "id -u; id -g; while [ ! -s /data ]; do sleep 0.05; done; cat /data"}, Env: []string{"PATH=/bin"}, Uid: 65534, Gid: 65534})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT); got != "65534\n65534\nkept\n" {
		t.Errorf("exec as 65534 printed %q; want uid, gid and the file", got)
	}
	if err := vm.c.Signal(ctx(t), agentapi.Process{Container: "app"}, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.c.Wait(ctx(t), agentapi.Process{Container: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	p = agentapi.Process{Container: "app", ExecID: "cat"}
	// The new run appends its line soon after it starts; wait for it
	// (a restart that lost the first run's line never gets to two).
	wait := "while [ $(wc -l < /data) -lt 2 ]; do sleep 0.05; done; cat /data"
	if err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "cat"}, Args: []string{"sh", "-c", wait}, Env: []string{"PATH=/bin"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if got := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT); got != "kept\nkept\n" {
		t.Errorf("after a restart /data = %q; want both runs' lines", got)
	}
}

// TestShutdown: Shutdown stops the containers and ends the agent as a
// VM powering off would; nothing answers afterwards.
func TestShutdown(t *testing.T) {
	vm := startAgent(t)
	startSleeper(t, vm)
	initPid := findPid(t, "cube-init:app")
	if err := vm.c.Shutdown(ctx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-vm.exit:
		vm.exit <- err
		if err != nil {
			t.Errorf("agent ended with %v after Shutdown; want 0", err)
		}
	case <-ctx(t).Done():
		t.Fatal("agent still running after Shutdown")
	}
	if err := unix.Kill(initPid, 0); err == nil {
		t.Errorf("container init %d alive after Shutdown", initPid)
	}
	if _, err := vm.c.Hello(ctx(t)); err == nil {
		t.Errorf("Hello after Shutdown succeeded; want the connection gone")
	}
}

// TestPidsLimit: Setup's pids limit bounds every process of the sandbox
// together: a fork loop in an exec hits it, and the agent stays up.
func TestPidsLimit(t *testing.T) {
	vm := startAgent(t)
	setup := baseSetup(sh("app", "exec sleep 1000"))
	setup.PidsLimit = 48
	if err := vm.c.Setup(ctx(t), setup); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	if _, err := vm.c.Start(ctx(t), "app"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	p := agentapi.Process{Container: "app", ExecID: "forks"}
	script := "i=0; while [ $i -lt 100 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); done; echo started-all"
	if err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "forks"}, Args: []string{"sh", "-c", script}, Env: []string{"PATH=/bin"}}); err != nil {
		t.Fatalf("Exec: %v", err)
	}
	stdout := readAll(t, vm, p, agentapi.Stream_STREAM_STDOUT)
	stderr := readAll(t, vm, p, agentapi.Stream_STREAM_STDERR)
	if strings.Contains(stdout, "started-all") || !strings.Contains(stderr, "fork") {
		t.Errorf("100 forks under pids.max 48: stdout %q, stderr %q; want fork failures", stdout, stderr)
	}
	if err := vm.c.Signal(ctx(t), agentapi.Process{Container: "app"}, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.c.Hello(ctx(t)); err != nil {
		t.Errorf("Hello after the fork loop: %v", err)
	}
}

// TestExecThatEndsMain: an exec that makes the main process exit at once
// (it creates the file the main process spins on) was started, and Exec
// says so: the init reports it before it ends with the main process.
// The race is narrow on a fast host, so it runs many times.
func TestExecThatEndsMain(t *testing.T) {
	vm := startAgent(t)
	spec := sh("app", "while [ ! -e /stop ]; do :; done; rm /stop; exit 7")
	spec.Env = []string{"PATH=/bin"}
	if err := vm.c.Setup(ctx(t), baseSetup(spec)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	main := agentapi.Process{Container: "app"}
	for i := range 20 {
		if _, err := vm.c.Start(ctx(t), "app"); err != nil {
			t.Fatalf("Start %d: %v", i, err)
		}
		err := vm.c.Exec(ctx(t), &agentapi.ExecRequest{Process: &agentapi.ProcessRef{Container: "app", ExecId: "stop" + strconv.Itoa(i)},
			Args: []string{"touch", "/stop"}, Env: []string{"PATH=/bin"}})
		if err != nil {
			t.Fatalf("run %d: Exec of the process that ends main: %v", i, err)
		}
		if st, err := vm.c.Wait(ctx(t), main); err != nil || st.Code != 7 {
			t.Fatalf("run %d: main ended %+v, %v; want exit 7", i, st, err)
		}
	}
}
