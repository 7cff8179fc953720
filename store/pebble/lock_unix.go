//go:build unix

package pebble

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the name of the file in the store's directory that the open
// Store holds an exclusive flock on. Pebble takes its own lock too (on its
// LOCK file), but ours comes first so that the error can say plainly who holds
// the directory, and flock conflicts between two opens in one process as well
// as between processes.
const lockFile = "cloudstate.lock"

// dirLock is a held directory lock; release gives it up.
type dirLock struct{ f *os.File }

// lockDir takes the exclusive lock on dir without waiting. A directory held
// by another Store gives an error wrapping ErrLocked that names the holder's
// pid; a directory we may not write gives one wrapping fs.ErrPermission.
func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("directory %s is not usable: %w", dir, err)
	}
	if err := flock(f); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "unknown pid"
			if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
				holder = "pid " + strings.TrimSpace(string(b))
			}
			return nil, fmt.Errorf("directory %s is in use by another cloudstate proxy (%s): %w", dir, holder, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The pid is only a hint for the message above; the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &dirLock{f: f}, nil
}

// flock takes an exclusive, non-blocking flock on f, retrying if a signal
// interrupts the call.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// release gives up the lock. The lock file stays: removing it would let a
// process that opened it before the removal lock a file nobody else sees.
func (l *dirLock) release() error {
	return l.f.Close()
}
