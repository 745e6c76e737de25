package network

import (
	"context"
	"sync"
)

// keyedMutex serializes operations per key (instance id) while letting
// different keys proceed in parallel; waiting honours ctx.
type keyedMutex struct {
	mu sync.Mutex
	// locks holds a one-slot semaphore per key in use, with the number of
	// holders and waiters; protected by mu.
	locks map[string]*keyLock
}

type keyLock struct {
	sem  chan struct{}
	refs int // protected by keyedMutex.mu
}

// lock acquires key and returns the function that releases it.
func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = make(map[string]*keyLock)
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{sem: make(chan struct{}, 1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()

	select {
	case l.sem <- struct{}{}:
		return func() { <-l.sem; k.release(key, l) }, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, ctx.Err()
	}
}

func (k *keyedMutex) release(key string, l *keyLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.locks, key)
	}
}
