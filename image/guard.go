package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// NetGuard keeps a tenant's pull away from the platform itself: the
// registry is named by the tenant, so without it a pull is a request
// forgery from inside the platform (to the API server, etcd, the node
// agent, a cloud metadata service, another tenant's instance).
//
// Every connection a guarded pull makes is checked when it is dialled:
// the host is resolved, every address is vetted, and the connection goes
// to a vetted address, never to a name resolved again. So a DNS name that
// resolves to loopback, a name that rebinds between two lookups, and a
// redirect to another host are all caught. A guarded pull uses no proxy
// from the environment (the proxy would make the connection on the tenant's
// behalf, unchecked).
type NetGuard struct {
	// Allow lists registries ("host:port", as written in image references)
	// that may be dialled whatever their addresses: the operator's
	// `cube up --registry-allow`.
	Allow []string
	// Deny lists prefixes refused on top of the built-in ones (loopback,
	// link-local, unspecified, multicast, and every address of this
	// host's interfaces): the instance network, other nodes' addresses.
	Deny []netip.Prefix
}

// alwaysDenied are prefixes no guarded pull may reach besides the ones
// netip classifies (loopback, link-local, multicast, unspecified).
var alwaysDenied = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),         // "this network"; 0.x reaches the host on Linux
	netip.MustParsePrefix("::/96"),             // IPv4-compatible IPv6, ::1 and ::
	netip.MustParsePrefix("64:ff9b::/96"),      // NAT64 of any IPv4, loopback included
	netip.MustParsePrefix("fd00:ec2::254/128"), // a cloud metadata service
}

// refusal explains why addr (the dialled host:port) may not be reached, or
// returns "" when it may.
func (g *NetGuard) refusal(ip netip.Addr, local []netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsUnspecified():
		return "the unspecified address"
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast():
		return "a multicast address"
	}
	for _, p := range alwaysDenied {
		if p.Contains(ip) {
			return "a reserved address"
		}
	}
	for _, a := range local {
		if a.Unmap() == ip {
			return "an address of this host"
		}
	}
	for _, p := range g.Deny {
		if p.Contains(ip) {
			return "an address of the platform"
		}
	}
	return ""
}

func (g *NetGuard) allowed(addr string) bool {
	for _, a := range g.Allow {
		if strings.EqualFold(a, addr) {
			return true
		}
	}
	return false
}

// localAddrs lists the addresses of this host's interfaces.
func localAddrs() []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// dialContext dials addr after vetting every address it resolves to.
func (g *NetGuard) dialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.allowed(addr) {
			return d.DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var ips []netip.Addr
		if ip, err := netip.ParseAddr(host); err == nil {
			ips = []netip.Addr{ip}
		} else {
			ips, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
		}
		local := localAddrs()
		for _, ip := range ips {
			if why := g.refusal(ip, local); why != "" {
				return nil, fmt.Errorf("%w: %s is %s (%s), which tenants may not pull from; the operator can allow this registry with `cube up --registry-allow %s`",
					ErrRegistryRefused, addr, why, ip, addr)
			}
		}
		var errs []error
		for _, ip := range ips {
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
}

// guardedTransport returns a copy of base that dials only what g allows,
// with no proxy.
func guardedTransport(base *http.Transport, g *NetGuard) *http.Transport {
	t := base.Clone()
	t.Proxy = nil
	t.DialContext = g.dialContext(&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second})
	return t
}

// maxErrorBody is what is read of an error response (ggcr refuses more
// than 64 KiB and then loses the status).
const maxErrorBody = 16 << 10

// cappedTransport bounds the bodies a pull reads into memory: every
// response that is not a blob (manifests, indexes, tokens, errors) may
// hold at most maxMetadataSize bytes. A declared length over the cap fails
// before the body is read; an undeclared one fails at the cap.
type cappedTransport struct {
	next http.RoundTripper
}

func (c cappedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode >= 400 {
		// An error body is parsed for its status and codes only, never
		// shown: a truncated one serves as well as a whole one.
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxErrorBody), resp.Body}
		resp.ContentLength = -1
		return resp, nil
	}
	if isBlobRequest(req) {
		return resp, nil
	}
	if resp.ContentLength > maxMetadataSize {
		resp.Body.Close()
		return nil, fmt.Errorf("registry %s sent a %d-byte response to %s, over the %s limit for manifests", req.URL.Host, resp.ContentLength, req.URL.Path, humanSize(maxMetadataSize))
	}
	resp.Body = &cappedBody{rc: resp.Body, left: maxMetadataSize, host: req.URL.Host}
	return resp, nil
}

// isBlobRequest reports whether req (or the request it was redirected
// from) fetches a blob, whose size the manifest bounds instead.
func isBlobRequest(req *http.Request) bool {
	for r := req; r != nil; {
		if strings.Contains(r.URL.Path, "/blobs/") {
			return true
		}
		if r.Response == nil {
			break
		}
		r = r.Response.Request
	}
	return false
}

type cappedBody struct {
	rc   io.ReadCloser
	left int64
	host string
}

// Read passes at most left bytes, reading one more to tell a body of
// exactly the cap from a longer one.
func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("registry %s sent a response over the %s limit for manifests", b.host, humanSize(maxMetadataSize))
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, fmt.Errorf("registry %s sent a response over the %s limit for manifests", b.host, humanSize(maxMetadataSize))
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
