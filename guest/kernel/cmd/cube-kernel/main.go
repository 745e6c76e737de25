// Command cube-kernel builds Cube's guest kernel into the cache when it is
// missing and prints its path: what `make kernel` runs. -hash and -find
// print the cache key and the cached path without building.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cube-platform/cube/guest/kernel"
)

func main() {
	cache := flag.String("cache", kernel.DefaultCacheDir, "cache root (the kernel goes to CACHE/kernel/HASH)")
	hash := flag.Bool("hash", false, "print the kernel's cache key and exit")
	find := flag.Bool("find", false, "print the cached vmlinux and exit; exit 1 when it is not built")
	verbose := flag.Bool("v", false, "log every line of the build")
	flag.Parse()
	switch {
	case *hash:
		fmt.Println(kernel.Hash())
		return
	case *find:
		p, ok := kernel.Find(*cache)
		if !ok {
			fmt.Fprintf(os.Stderr, "cube-kernel: no kernel at %s (run make kernel)\n", kernel.Dir(*cache))
			os.Exit(1)
		}
		fmt.Println(p)
		return
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := kernel.DefaultBuilderConfig()
	cfg.CacheDir, cfg.Logger = *cache, log
	b := kernel.NewBuilder(cfg)
	b.Start(ctx)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-b.Done():
			st := b.Status()
			if st.Err != nil {
				fmt.Fprintln(os.Stderr, "cube-kernel:", st.Err)
				os.Exit(1)
			}
			fmt.Println(st.Path)
			return
		case <-tick.C:
			st := b.Status()
			log.Info("guest kernel build", "phase", st.Phase, "percent", st.Percent, "step", st.Step)
		}
	}
}
