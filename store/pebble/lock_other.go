//go:build !unix

package pebble

// dirLock is a no-op where flock is not available; Pebble's own lock on its
// LOCK file still keeps a second process out, with a less helpful message.
type dirLock struct{}

func lockDir(dir string) (*dirLock, error) { return &dirLock{}, nil }

func (l *dirLock) release() error { return nil }
