# Cube: `make up` installs what is missing, builds, and runs Cube on this
# machine; `make test` runs every test. Both need root (cgroups, mounts,
# network namespaces), as Cube itself does.

GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN      := bin/cube
# cube-shim, the per-instance supervisor, goes beside cube: cube up uses it
# when it is there (it starts far faster than `cube shim`). It is built
# without cgo: it resolves no names, and libc's pages were 1.5 MiB of each
# shim's RSS (go test -bench ShimRSS ./shim/).
SHIM_BIN := bin/cube-shim
# cube-agent, the guest agent (PID 1 of each microVM's initramfs), goes
# beside them too; it must be static.
AGENT_BIN := bin/cube-agent
# cube-init, each container's init in a microVM, goes in the same
# initramfs (so beside them); static too.
INIT_BIN := bin/cube-init
PREFIX   ?= /usr/local
# Debian packages Cube runs with (runc, CNI plugins, iptables) and tests
# with (a real OCI registry, busybox for test images, containerd to compare
# one-shot runs against).
RUN_PKGS  := runc containernetworking-plugins iptables iproute2 nftables e2fsprogs
TEST_PKGS := docker-registry busybox-static containerd
# The microVM runtime: QEMU, mkfs.erofs for images as block devices, and
# what building the guest kernel from Debian's source takes.
VM_PKGS     := qemu-system-x86 erofs-utils
KERNEL_PKGS := linux-source-6.1 flex bison bc libelf-dev libssl-dev build-essential cpio xz-utils
GOFLAGS_TEST ?= -count=1 -timeout 45m

.PHONY: all build deps deps-test up test vet install clean busybox.tar kernel

all: build

# deps installs the missing Debian packages only (apt-get when missing).
deps:
	@missing=""; for p in $(RUN_PKGS) $(VM_PKGS) $(KERNEL_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deps-test: deps
	@missing=""; for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build:
	$(GO) build -o $(BIN) ./cmd/cube
	CGO_ENABLED=0 $(GO) build -o $(SHIM_BIN) ./cmd/cube-shim
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(AGENT_BIN) ./cmd/cube-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(INIT_BIN) ./cmd/cube-init

install: build
	install -m 0755 $(BIN) $(PREFIX)/bin/cube
	install -m 0755 $(SHIM_BIN) $(PREFIX)/bin/cube-shim
	install -m 0755 $(AGENT_BIN) $(PREFIX)/bin/cube-agent
	install -m 0755 $(INIT_BIN) $(PREFIX)/bin/cube-init

# up: everything on this machine, in the foreground (Ctrl-C stops the
# control plane; instances keep running and the next `make up` adopts them).
up: deps install
	$(PREFIX)/bin/cube up

vet:
	$(GO) vet ./...

# test: every test, with the race detector on every package (most start
# goroutines). The end-to-end suite builds its own cube binary.
test: deps-test vet kernel
	$(GO) test -race $(GOFLAGS_TEST) ./...

# kernel: the guest kernel in /var/cache/cube/kernel/<hash>/, built when
# missing (minutes; once per config). `make up` does not wait for it: cube
# up builds it in the background.
kernel: deps
	$(GO) run ./guest/kernel/cmd/cube-kernel

# busybox.tar: a tiny OCI image of Debian's static busybox, named
# docker.io/library/busybox:latest, for the README tour on a machine with
# no registry access.
busybox.tar:
	@dpkg -s busybox-static >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static)
	$(GO) run ./hack/mkbusybox -o $@

clean:
	rm -rf bin busybox.tar
