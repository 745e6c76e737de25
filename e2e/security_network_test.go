package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// cubeAs runs the CLI against c with token (a tenant's) and returns
// stdout+stderr and the exit code (-1 if it could not run).
func (c *cluster) cubeAs(token string, args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(cubeBin, args...)
	cmd.Env = append(os.Environ(), "CUBE_CONFIG="+c.config, "CUBE_TOKEN="+token)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		c.t.Errorf("cube %v: %v", args, err) // not Fatal: goroutines call this
		return out.String(), -1
	}
	return out.String(), 0
}

func (c *cluster) mustCubeAs(token string, args ...string) string {
	c.t.Helper()
	out, code := c.cubeAs(token, args...)
	if code != 0 {
		c.t.Fatalf("cube %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// TestSecurityNetwork: through a real `cube up`, an instance of tenant beta
// cannot reach an unpublished port of tenant alpha's instance by IP, while
// alpha's second instance can; no instance reaches a port on the gateway
// address, the API server's port included; all of it still holds after
// `cube up` is killed and started again (the node adopts the instances).
func TestSecurityNetwork(t *testing.T) {
	c := startCluster(t)
	// The network's filter tables outlive its bridge (see
	// network/filter.go); the harness removes only the bridge.
	t.Cleanup(func() {
		for _, fam := range []string{"bridge", "inet"} {
			_ = exec.Command("nft", "delete", "table", fam, "cube_"+c.bridge).Run()
		}
	})
	ref := pushBusybox(t)
	alpha := strings.TrimSpace(c.mustCube("tenant", "create", "alpha"))
	beta := strings.TrimSpace(c.mustCube("tenant", "create", "beta"))
	for _, tok := range []string{alpha, beta} {
		c.mustCubeAs(tok, "image", "pull", ref, "--insecure")
	}
	run := func(tok, name string, cmd ...string) {
		c.mustCubeAs(tok, append([]string{"run", "--name", name, "--cpu", "0.1", "--memory", "32Mi", ref, "--"}, cmd...)...)
	}
	run(alpha, "a1", "sh", "-c", "mkdir -p /www && echo alpha-a1 > /www/index.html && exec httpd -f -p 8080 -h /www")
	run(alpha, "a2", "sleep", "600")
	run(beta, "b1", "sleep", "600")
	t.Cleanup(func() {
		for _, in := range []struct{ tok, name string }{{alpha, "a1"}, {alpha, "a2"}, {beta, "b1"}} {
			c.cubeAs(in.tok, "rm", "-f", in.name)
		}
	})
	for _, in := range []struct{ tok, name string }{{alpha, "a1"}, {alpha, "a2"}, {beta, "b1"}} {
		c.mustCubeAs(in.tok, "wait", in.name, "--for", "running", "--timeout", "60s")
	}
	a1IP := strings.TrimSpace(c.mustCubeAs(alpha, "get", "a1", "-o", "jsonpath={.status.ip}"))
	gw := netip.MustParsePrefix(c.subnet).Addr().Next().String()
	apiPort := c.listen[strings.LastIndex(c.listen, ":")+1:]

	// A host service on every address; the host itself reaches it on the
	// gateway address (positive control).
	l, err := net.Listen("tcp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "host") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	hostPort := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	if resp, err := http.Get("http://" + net.JoinHostPort(gw, hostPort) + "/"); err != nil {
		t.Fatalf("host cannot reach its own service on the gateway address: %v", err)
	} else {
		resp.Body.Close()
	}

	// An HTTP GET with busybox nc from inside an instance (busybox wget
	// -T crashes); a dropped SYN times out after 2 s.
	fetch := func(tok, from, hostport string) (string, int) {
		host, port, _ := net.SplitHostPort(hostport)
		return c.cubeAs(tok, "exec", from, "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" "$1"`, host, port)
	}
	check := func(when string) {
		if out, code := fetch(alpha, "a2", a1IP+":8080"); code != 0 || !strings.Contains(out, "alpha-a1") {
			t.Errorf("%s: alpha's a2 -> a1:8080 = %q, exit %d; want alpha-a1", when, out, code)
		}
		// Each of these waits out its timeout: in parallel.
		var wg sync.WaitGroup
		wg.Go(func() {
			if out, code := fetch(beta, "b1", a1IP+":8080"); code == 0 || strings.Contains(out, "alpha-a1") {
				t.Errorf("%s: beta's b1 -> alpha's a1:8080 = %q, exit %d; want no connection", when, out, code)
			}
		})
		for _, port := range []string{hostPort, apiPort} {
			wg.Go(func() {
				// Dropped, not refused: the host does not even answer.
				if out, code := fetch(alpha, "a1", net.JoinHostPort(gw, port)); code == 0 || strings.Contains(out, "refused") {
					t.Errorf("%s: a1 -> gateway %s:%s = %q, exit %d; want a timeout", when, gw, port, out, code)
				}
			})
		}
		wg.Wait()
	}
	check("first start")

	// A crash: the instances outlive cube up, and the new node agent's
	// network manager re-makes their filter.
	c.kill9()
	c.start()
	check("after a restart")
}
