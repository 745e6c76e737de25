// Package imagetest builds real OCI images, image archives and hostile
// layers in test code, and runs a real registry on loopback, for the tests
// of package image and of everything that imports or pulls images (the API
// server, the node agent, the end-to-end suite).
//
// Images are built from Debian's static busybox (/bin/busybox, package
// busybox-static) and are deterministic: the same options give the same
// digest on the same machine. The registry is Debian's docker-registry.
// When a tool is missing, helpers skip the test with the package to
// install, except under CI (CI=true), where they fail: CI must have them.
//
// This package is for tests only. It must not depend on package image (so
// that image's own tests can use it) nor on anything else of Cube's.
package imagetest
