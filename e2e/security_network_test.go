package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/cube-platform/cube/image/imagetest"
)

func TestSecurityNetwork(t *testing.T) {
	c := startCluster(t)
	// Tenants may not pull from a loopback registry (the pull guard), so
	// each imports the image.
	ref := "cube.test/busybox:net"
	archive := imagetest.BuildBusybox(t, "", imagetest.WithRef(ref))
	alpha := strings.TrimSpace(c.mustCube("tenant", "create", "alpha", "--allow-runtime", "runc"))
	beta := strings.TrimSpace(c.mustCube("tenant", "create", "beta", "--allow-runtime", "runc"))
	for _, tok := range []string{alpha, beta} {
		c.mustCubeAs(tok, "image", "import", archive)
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
		out, errOut, code := c.cubeAs(tok, "exec", from, "--", "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 "$0" "$1"`, host, port)
		return out + errOut, code
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
