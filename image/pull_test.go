package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cube-platform/cube/errdefs"
	"github.com/cube-platform/cube/image/imagetest"
)

func TestPull(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	img := imagetest.BusyboxImage(t, imagetest.WithCmd("echo", "pulled"),
		imagetest.WithLayer(imagetest.File("app/hello.txt", 0o644, "hello\n")))
	ref := reg + "/cube/busybox:v1"
	imagetest.Push(t, img, ref)

	s := newStore(t)
	var progress bytes.Buffer
	got, err := s.Pull(t.Context(), testOwner, ref, PullOptions{Progress: &progress})
	if err != nil {
		t.Fatalf("Pull(%s) = %v", ref, err)
	}
	want := Image{
		Ref:      ref,
		Digest:   imagetest.Digest(t, img),
		Size:     layerSize(t, img),
		Created:  imagetest.Epoch,
		Config:   Config{Cmd: []string{"echo", "pulled"}, Env: []string{imagetest.DefaultPath}},
		Unpacked: unpackedSize(t, img),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Pull(%s) = %+v; want %+v", ref, got, want)
	}
	for _, line := range []string{"pulling " + ref, "pulling sha256:", "pulled " + ref + " " + want.Digest} {
		if !strings.Contains(progress.String(), line) {
			t.Errorf("progress = %q; want a line with %q", progress.String(), line)
		}
	}
	root := rootFS(t, s, got.Digest)
	if b, err := os.ReadFile(filepath.Join(root, "app/hello.txt")); err != nil || string(b) != "hello\n" {
		t.Errorf("app/hello.txt = %q, %v", b, err)
	}

	// A second pull (by digest this time) downloads nothing new.
	progress.Reset()
	byDigest := reg + "/cube/busybox@" + want.Digest
	again, err := s.Pull(t.Context(), testOwner, byDigest, PullOptions{Progress: &progress})
	if err != nil || again.Digest != want.Digest || again.Ref != byDigest {
		t.Errorf("Pull(%s) = %+v, %v; want %s named %s", byDigest, again, err, want.Digest, byDigest)
	}
	if strings.Contains(progress.String(), "pulling sha256:") || !strings.Contains(progress.String(), "already have sha256:") {
		t.Errorf("second pull progress = %q; want every layer already there", progress.String())
	}
	if l, err := s.List(t.Context()); err != nil || len(l) != 1 {
		t.Errorf("List() = %+v, %v; want one image", l, err)
	}
}

func TestPullMultiPlatform(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	amd := imagetest.BusyboxImage(t)
	arm := imagetest.BusyboxImage(t, imagetest.WithArchitecture("arm64"))
	imagetest.PushIndex(t, imagetest.Index(t, arm, amd), reg+"/cube/multi:v1")
	imagetest.PushIndex(t, imagetest.Index(t, arm), reg+"/cube/armonly:v1")
	imagetest.Push(t, arm, reg+"/cube/armimage:v1")

	s := newStore(t)
	got, err := s.Pull(t.Context(), testOwner, reg+"/cube/multi:v1", PullOptions{})
	if err != nil || got.Digest != imagetest.Digest(t, amd) {
		t.Errorf("Pull(multi-platform) = %+v, %v; want the amd64 image %s", got, err, imagetest.Digest(t, amd))
	}
	_, err = s.Pull(t.Context(), testOwner, reg+"/cube/armonly:v1", PullOptions{})
	wantErr(t, "Pull(arm64-only index)", err, ErrNotFound, "no linux/amd64 variant", "linux/arm64")
	_, err = s.Pull(t.Context(), testOwner, reg+"/cube/armimage:v1", PullOptions{})
	wantErr(t, "Pull(arm64 image)", err, ErrNotFound, "linux/arm64", "cube runs linux/amd64 images")
}

func TestPullErrors(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	imagetest.Push(t, imagetest.BusyboxImage(t), reg+"/cube/busybox:v1")
	s := newStore(t)
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		ref   string
		class error
		want  []string
	}{
		{"unknown repository", t.Context(), reg + "/nope/missing:v1", ErrNotFound,
			[]string{`image "` + reg + `/nope/missing:v1" not found in registry ` + reg}},
		{"unknown tag", t.Context(), reg + "/cube/busybox:nope", ErrNotFound,
			[]string{`image "` + reg + `/cube/busybox:nope" not found in registry ` + reg}},
		{"unknown digest", t.Context(), reg + "/cube/busybox@sha256:" + strings.Repeat("1", 64), ErrNotFound,
			[]string{"not found in registry"}},
		{"bad reference", t.Context(), "UPPER::x", ErrInvalidReference, []string{`"UPPER::x"`}},
		{"cancelled", cancelled, reg + "/cube/busybox:v1", context.Canceled, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Pull(tt.ctx, testOwner, tt.ref, PullOptions{})
			wantErr(t, "Pull("+tt.ref+")", err, tt.class, tt.want...)
		})
	}
	// The API edge sees the errdefs class.
	_, err := s.Pull(t.Context(), testOwner, reg+"/nope/missing:v1", PullOptions{})
	wantErr(t, "Pull(missing)", err, errdefs.ErrNotFound)
	if l, err := s.List(t.Context()); err != nil || len(l) != 0 {
		t.Errorf("List() = %+v, %v after failed pulls; want nothing", l, err)
	}
}

func TestPullUnreachable(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, err := s.Pull(ctx, testOwner, "127.0.0.1:1/cube/busybox:v1", PullOptions{Insecure: true})
	if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Pull(unreachable registry) = %v; want a connection error naming the registry", err)
	}
}
