package controller

import (
	"context"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/cube-platform/cube/store"
)

// runElected campaigns on key and runs lead while this replica leads, until
// ctx ends. lead's context ends when leadership is lost (the session
// expires); it then campaigns again.
func runElected(ctx context.Context, st *store.Store, key, identity string, log *slog.Logger, lead func(context.Context)) {
	for ctx.Err() == nil {
		session, err := concurrency.NewSession(st.Client(), concurrency.WithTTL(10), concurrency.WithContext(ctx))
		if err != nil {
			log.Warn("election session failed; retrying", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		election := concurrency.NewElection(session, key)
		if err := election.Campaign(ctx, identity); err != nil {
			session.Close()
			continue
		}
		log.Info("leading")
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-session.Done():
				log.Warn("lost the election session")
			case <-lctx.Done():
			}
			cancel()
		}()
		lead(lctx)
		cancel()
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = election.Resign(rctx)
		rcancel()
		session.Close()
	}
}
