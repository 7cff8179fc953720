package pebble

import (
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walCategory is the write category Pebble gives its write-ahead log files.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// walSyncs counts the syncs of write-ahead log files and the time they took:
// how Stats learns how many writes each fsync covered, and how long the disk
// made them wait.
type walSyncs struct {
	n, nanos atomic.Int64
}

// timed runs sync and counts it.
func (c *walSyncs) timed(sync func() error) error {
	start := time.Now()
	err := sync()
	c.n.Add(1)
	c.nanos.Add(int64(time.Since(start)))
	return err
}

// walSyncCounter is the filesystem the Store gives Pebble: the real one,
// except that it counts and times the syncs of write-ahead log files.
type walSyncCounter struct {
	vfs.FS
	syncs *walSyncs
}

func (fs walSyncCounter) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	return fs.wrap(f, category), err
}

func (fs walSyncCounter) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	return fs.wrap(f, category), err
}

func (fs walSyncCounter) wrap(f vfs.File, category vfs.DiskWriteCategory) vfs.File {
	if f == nil || category != walCategory {
		return f
	}
	return walFile{File: f, syncs: fs.syncs}
}

// walFile counts and times the syncs of one write-ahead log file. Pebble
// syncs a WAL with SyncData (through its syncing wrapper's Sync), but both
// are counted.
type walFile struct {
	vfs.File
	syncs *walSyncs
}

func (f walFile) Sync() error { return f.syncs.timed(f.File.Sync) }

func (f walFile) SyncData() error { return f.syncs.timed(f.File.SyncData) }
