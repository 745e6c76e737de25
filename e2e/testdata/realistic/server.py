#!/usr/bin/python3
"""The realistic image's workload (TestRealisticImage).

It reports on stdout, one "report {json}" line each, what a typical
Debian-based server relies on: who it runs as (passwd, groups, HOME),
POSIX shared memory between two processes (/dev/shm), a file written on
the writable layer, and then serves HTTP on :8080, appending every request
to a log it fsyncs. SIGTERM makes it write a marker, tell its PEER (when
set) and exit 0: a graceful stop. With ROLE=peer it only serves, and
prints what it is told on POST /notify.
"""
import grp
import hashlib
import http.server
import json
import multiprocessing
import os
import platform
import pwd
import signal
import sys
import threading
import urllib.request
from multiprocessing import resource_tracker, shared_memory

DATA = "/var/lib/app"
REQUESTS = DATA + "/requests.log"
MARKER = DATA + "/sigterm"
SHM_SIZE = 1 << 20
# KEEP stays alive while the server runs, for an exec'd process to attach.
KEEP = "cube-realistic-keep"
KEEP_TEXT = b"kept by the server for an exec"

lock = threading.Lock()
served = 0
keep = None


def report(kind, **kv):
    kv["kind"] = kind
    print("report " + json.dumps(kv, sort_keys=True), flush=True)


def write_synced(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def identity():
    old = os.umask(0)
    os.umask(old)
    pw = pwd.getpwuid(os.getuid())
    return dict(
        uid=os.getuid(), euid=os.geteuid(), gid=os.getgid(), egid=os.getegid(),
        groups=sorted(os.getgroups()), user=pw.pw_name, group=grp.getgrgid(os.getgid()).gr_name,
        passwd_home=pw.pw_dir, home=os.environ.get("HOME"), cwd=os.getcwd(), umask=oct(old),
        path=os.environ.get("PATH"), lang=os.environ.get("LANG"),
        pid_is_1=os.getpid() == 1, kernel=platform.release(), python=platform.python_version(),
    )


def mount_type(target):
    """The type of the last (visible) mount on target, or None."""
    kind = None
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[1] == target:
                kind = fields[2]
    return kind


def shm_child(name, digest):
    """Runs in a spawned interpreter (a fresh exec, not a fork): attaches
    to the parent's block by name, checks it, and answers in it."""
    block = shared_memory.SharedMemory(name=name)
    # Python 3.11 would unlink an attached block when this process ends.
    resource_tracker.unregister(block._name, "shared_memory")
    ok = hashlib.sha256(bytes(block.buf[:SHM_SIZE // 2])).hexdigest() == digest
    answer = ("pong uid=%d seen=%s" % (os.getuid(), ok)).encode()
    block.buf[SHM_SIZE // 2:SHM_SIZE // 2 + len(answer)] = answer
    block.close()
    sys.exit(0 if ok else 3)


def shm_check():
    name = "cube-realistic"
    block = shared_memory.SharedMemory(name=name, create=True, size=SHM_SIZE)
    try:
        pattern = bytes((i * 7 + 3) % 251 for i in range(SHM_SIZE // 2))
        block.buf[:len(pattern)] = pattern
        st = os.stat("/dev/shm/" + name)
        child = multiprocessing.get_context("spawn").Process(
            target=shm_child, args=(name, hashlib.sha256(pattern).hexdigest()))
        child.start()
        child.join(120)
        answer = bytes(block.buf[SHM_SIZE // 2:SHM_SIZE // 2 + 64]).rstrip(b"\0").decode()
        return dict(
            child_exit=child.exitcode, answer=answer, size=st.st_size,
            file_owner="%d:%d" % (st.st_uid, st.st_gid), file_mode=oct(st.st_mode & 0o777),
            dev_shm=mount_type("/dev/shm"),
        )
    finally:
        block.close()
        block.unlink()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global served
        with lock:
            served += 1
            n = served
            write_synced(REQUESTS, "%d GET %s\n" % (n, self.path), "a")
        self.reply(200, dict(n=n, path=self.path, uid=os.getuid()))

    def do_POST(self):
        length = min(int(self.headers.get("Content-Length", "0")), 1 << 16)
        body = self.rfile.read(length)
        if self.path == "/notify":
            report("notify", body=json.loads(body))
        self.reply(200, dict(ok=True))

    def reply(self, code, obj):
        body = json.dumps(obj, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def on_sigterm(signum, frame):
    with lock:
        marker = "SIGTERM after %d requests\n" % served
        write_synced(MARKER, marker)
    report("sigterm", marker=marker)
    peer = os.environ.get("PEER")
    if peer:
        req = urllib.request.Request("http://%s/notify" % peer, method="POST",
                                     data=json.dumps(dict(marker=marker, name=os.environ.get("NAME"))).encode())
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except OSError as e:
            report("notify-failed", error=str(e))
    if keep is not None:
        keep.close()
        keep.unlink()
    report("exit", code=0)
    sys.exit(0)


def main():
    global keep
    role = os.environ.get("ROLE", "web")
    if role == "web":
        report("identity", **identity())
        report("shm", **shm_check())
        write_synced(os.path.expanduser("~app") + "/started", "started\n")
        write_synced("/tmp/started", "started\n")
        keep = shared_memory.SharedMemory(name=KEEP, create=True, size=4096)
        keep.buf[:len(KEEP_TEXT)] = KEEP_TEXT
        signal.signal(signal.SIGTERM, on_sigterm)
    else:
        # The peer stops at once too: as PID 1 under runc, a process
        # without a handler would ignore SIGTERM until the grace's SIGKILL.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler)
    server.daemon_threads = True
    report("listening", port=8080, role=role)
    server.serve_forever()


if __name__ == "__main__":
    main()
