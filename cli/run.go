package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	v1 "github.com/cube-platform/cube/api/v1"
	"github.com/cube-platform/cube/client"
	"github.com/spf13/cobra"
)

type runFlags struct {
	name, cpu, memory, restart, workdir, entrypoint, priority string
	env, envFiles, ports, labels                              []string
	detach, attach, interactive, tty, rm                      bool

	pids    int64  // spec.pids (0: the server's default)
	disk    string // spec.disk
	runtime string // spec.runtime ("": the tenant's default)
}

func newRunCmd(g *globals) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Create and start an instance",
		Long: `Create an instance from IMAGE and return as soon as it exists, printing its name.
Everything after IMAGE is the command (a "--" right after IMAGE is dropped).
With --attach (or -it) the output is streamed and cube exits with the
instance's exit code.

--runtime microvm runs the instance's containers in a lightweight VM of
their own (the default for every tenant but admin); --runtime runc runs them
in namespaces of the node's kernel, for tenants the admin granted it
(cube tenant update NAME --allow-runtime runc).

--env-file reads KEY=VALUE lines; blank lines and lines starting with # are
skipped, and one pair of matching quotes around a value is stripped.`,
		Example: `  cube run --name web --cpu 0.5 --memory 256Mi -e GREETING=hi -p 8080:80 busybox -- httpd -f -p 80
  cube run --restart never --attach busybox -- sh -c 'echo hello; exit 3'
  cube run --runtime microvm --attach --restart never busybox -- uname -r`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := f.instance(args)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			out, err := c.CreateInstance(ctx, in)
			if err != nil {
				return err
			}
			if !f.attach && !(f.interactive && f.tty) {
				fmt.Fprintln(g.stdout, out.Metadata.Name)
				return nil
			}
			if f.interactive {
				fmt.Fprintln(g.stderr, "cube: warning: stdin is not attached to an instance's main process; use `cube exec -it` for an interactive shell")
			}
			code, err := attach(ctx, g, c, out.Metadata.Name)
			if f.rm {
				_ = c.DeleteInstance(context.Background(), out.Metadata.Name, true)
			}
			if err != nil {
				return err
			}
			return &ExitError{Code: code}
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.StringVar(&f.name, "name", "", "instance name (default: generated from the image)")
	fl.StringVar(&f.cpu, "cpu", "", "cpu limit in cores, e.g. 0.5 or 500m (default 1)")
	fl.StringVar(&f.cpu, "cpus", "", "alias of --cpu")
	fl.StringVarP(&f.memory, "memory", "m", "", "memory limit, e.g. 256Mi, 1Gi, 512m (default 256Mi)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable; KEY alone copies it from here)")
	fl.StringArrayVar(&f.envFiles, "env-file", nil, "read environment variables from a file (repeatable)")
	fl.StringArrayVarP(&f.ports, "publish", "p", nil, "publish a port HOST:CONTAINER[/tcp|udp] (repeatable)")
	fl.StringArrayVar(&f.labels, "label", nil, "set a label key=value (repeatable)")
	fl.StringVar(&f.restart, "restart", "always", "restart policy: always|on-failure[:N]|never (N bounds the restarts; Docker's no = never)")
	fl.StringVarP(&f.workdir, "workdir", "w", "", "working directory inside the container")
	fl.StringVar(&f.priority, "priority", "", "priority band: system|production|batch|best-effort (default production)")
	fl.StringVar(&f.entrypoint, "entrypoint", "", "override the image's entrypoint")
	fl.Int64Var(&f.pids, "pids", 0, "cap on the processes and threads of the whole instance (default 1024, 16 to 16384)")
	fl.Int64Var(&f.pids, "pids-limit", 0, "alias of --pids (Docker's spelling)")
	fl.StringVar(&f.disk, "disk", "", "size of the instance's writable layer, e.g. 512Mi, 4Gi (default 1Gi, 16Mi to 256Gi)")
	fl.StringVar(&f.runtime, "runtime", "", "isolation: microvm (a VM of its own) or runc (the node's kernel; needs a grant) (default: the tenant's)")
	fl.BoolVarP(&f.detach, "detach", "d", false, "accepted for Docker habits; run always returns once created")
	fl.BoolVarP(&f.attach, "attach", "a", false, "stream the output and exit with the instance's exit code")
	fl.BoolVarP(&f.interactive, "interactive", "i", false, "with -t: attach (see --attach)")
	fl.BoolVarP(&f.tty, "tty", "t", false, "with -i: attach (see --attach)")
	fl.BoolVar(&f.rm, "rm", false, "with --attach: remove the instance when it exits")
	return cmd
}

// ParseRestart maps Docker's spellings onto the API's restart policy and
// its bound on restarts (on-failure:N; 0 means none).
func ParseRestart(s string) (v1.RestartPolicy, int, error) {
	base, n, hasN := strings.Cut(strings.ToLower(s), ":")
	switch base {
	case "always", "unless-stopped":
		return v1.RestartAlways, 0, nil
	case "on-failure", "onfailure":
		if !hasN {
			return v1.RestartOnFailure, 0, nil
		}
		max, err := strconv.Atoi(n)
		if err != nil || max < 0 {
			return "", 0, fmt.Errorf("--restart %q: the retry count must be a number of at least 0", s)
		}
		return v1.RestartOnFailure, max, nil
	case "never", "no":
		return v1.RestartNever, 0, nil
	}
	return "", 0, fmt.Errorf("--restart %q: want always, on-failure[:N] or never", s)
}

// ParsePort parses -p HOST:CONTAINER[/proto] (or CONTAINER alone: exposed,
// not published).
func ParsePort(s string) (v1.ContainerPort, error) {
	spec, proto, _ := strings.Cut(s, "/")
	if proto == "" {
		proto = "tcp"
	}
	var p v1.ContainerPort
	p.Protocol = strings.ToUpper(proto)
	hostS, ctrS, published := strings.Cut(spec, ":")
	if !published {
		ctrS, hostS = hostS, ""
	}
	var err error
	if p.ContainerPort, err = strconv.Atoi(ctrS); err != nil {
		return p, fmt.Errorf("-p %q: want HOST:CONTAINER[/tcp|udp], e.g. 8080:80", s)
	}
	if hostS != "" {
		if p.HostPort, err = strconv.Atoi(hostS); err != nil {
			return p, fmt.Errorf("-p %q: want HOST:CONTAINER[/tcp|udp], e.g. 8080:80", s)
		}
	}
	return p, nil
}

// ReadEnvFile reads KEY=VALUE lines, stripping one pair of matching quotes.
func ReadEnvFile(path string) ([]v1.EnvVar, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	defer f.Close()
	var out []v1.EnvVar
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			v, ok = os.LookupEnv(k)
			if !ok {
				continue
			}
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out = append(out, v1.EnvVar{Name: strings.TrimSpace(k), Value: v})
	}
	return out, sc.Err()
}

func (f *runFlags) instance(args []string) (*v1.Instance, error) {
	img := args[0]
	command := args[1:]
	if len(command) > 0 && command[0] == "--" {
		command = command[1:]
	}
	restart, maxRestarts, err := ParseRestart(f.restart)
	if err != nil {
		return nil, err
	}
	c := v1.Container{Image: img, WorkingDir: f.workdir, Resources: v1.Resources{CPU: f.cpu, Memory: f.memory}}
	if f.entrypoint != "" {
		c.Command = []string{f.entrypoint}
		c.Args = command
	} else if len(command) > 0 {
		c.Command = command
	}
	for _, path := range f.envFiles {
		env, err := ReadEnvFile(path)
		if err != nil {
			return nil, err
		}
		c.Env = append(c.Env, env...)
	}
	for _, e := range f.env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		c.Env = append(c.Env, v1.EnvVar{Name: k, Value: v})
	}
	for _, p := range f.ports {
		cp, err := ParsePort(p)
		if err != nil {
			return nil, err
		}
		c.Ports = append(c.Ports, cp)
	}
	labels := map[string]string{}
	for _, l := range f.labels {
		k, v, _ := strings.Cut(l, "=")
		labels[k] = v
	}
	name := f.name
	if name == "" {
		name = generateName(img)
	}
	in := &v1.Instance{
		APIVersion: v1.Version, Kind: "Instance",
		Metadata: v1.ObjectMeta{Name: name, Labels: labels},
		Spec:     v1.InstanceSpec{Containers: []v1.Container{c}, RestartPolicy: restart, MaxRestarts: maxRestarts, Priority: f.priority},
	}
	in.Spec.Pids, in.Spec.Disk, in.Spec.Runtime = f.pids, f.disk, f.runtime
	return in, nil
}

// generateName makes "busybox-3f2a" from "127.0.0.1:5000/lib/busybox:1.36".
func generateName(img string) string {
	base := img
	if i := strings.LastIndex(base, "/"); i >= 0 {
		base = base[i+1:]
	}
	base, _, _ = strings.Cut(base, "@")
	base, _, _ = strings.Cut(base, ":")
	var sb strings.Builder
	for _, r := range strings.ToLower(base) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			sb.WriteRune(r)
		}
	}
	s := strings.Trim(sb.String(), "-")
	if s == "" {
		s = "instance"
	}
	if len(s) > 40 {
		s = s[:40]
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return s + "-" + hex.EncodeToString(b[:])
}

// logGrace bounds how long attach waits, once the instance ended, for
// its log stream to end by itself. It ends at once with a shim that marks
// a container's log complete when it ends for good; the bound is only for
// a shim that does not (one started by an older cube).
const logGrace = 10 * time.Second

// attach streams an instance's logs until the stream ends by itself (the
// container ended for good and every line was written) and returns the
// exit code of its first non-zero container (0 when all succeeded). The
// log follow and the wait for the exit run side by side from the moment
// the node has the instance.
func attach(ctx context.Context, g *globals, c *client.Client, name string) (int, error) {
	// The node serves the logs of an instance it is creating: following
	// starts before the container does, so no line is missed.
	if _, err := waitFor(ctx, c, name, []string{"creating", "running", "exited"}, 10*time.Minute); err != nil {
		return 0, err
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	logs := make(chan error, 1)
	go func() { logs <- c.Logs(lctx, name, client.LogOptions{Follow: true, Tail: -1}, g.stdout) }()
	type exit struct {
		in  *v1.Instance
		err error
	}
	exited := make(chan exit, 1)
	go func() {
		for {
			in, err := c.WaitInstance(lctx, name, []string{"exited"}, 5*time.Minute)
			if err == nil || !isTimeout(err) {
				exited <- exit{in, err}
				return
			}
		}
	}()
	var (
		res      exit
		gotExit  bool
		logsDone bool
		logErr   error
		grace    <-chan time.Time
	)
	for !gotExit || !logsDone {
		select {
		case logErr = <-logs:
			logsDone = true
		case res = <-exited:
			gotExit = true
			if res.err != nil || res.in == nil {
				cancel()
				if !logsDone {
					<-logs
					logsDone = true
				}
				break
			}
			if !logsDone && !anyStarted(res.in) {
				// It failed before any container ran (say, the node
				// could not create it): there is no output to wait for.
				cancel()
				<-logs
				logsDone = true
			}
			if !logsDone {
				t := time.NewTimer(logGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			fmt.Fprintf(g.stderr, "cube: warning: the log stream of %q did not end %s after it exited; its output may be incomplete\n", name, logGrace)
			cancel()
			<-logs
			logsDone = true
		}
	}
	if res.err != nil {
		return 0, res.err
	}
	if res.in == nil {
		return 0, fmt.Errorf("instance %q was deleted", name)
	}
	if logErr != nil && ctx.Err() == nil {
		fmt.Fprintf(g.stderr, "cube: warning: following the logs of %q: %v\n", name, logErr)
	}
	return exitCode(res.in), nil
}

// anyStarted reports whether any container of in ever started.
func anyStarted(in *v1.Instance) bool {
	for _, cs := range in.Status.Containers {
		if cs.StartedAt != nil {
			return true
		}
	}
	return false
}

func exitCode(in *v1.Instance) int {
	for _, cs := range in.Status.Containers {
		if cs.ExitCode != 0 {
			return cs.ExitCode
		}
	}
	if in.Status.Phase == v1.PhaseFailed {
		return ExitCubeError
	}
	return 0
}
