package pebble

import (
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walCategory is the write category Pebble gives its write-ahead log files.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// walSyncCounter is the filesystem the Store gives Pebble: the real one,
// except that it counts the syncs of write-ahead log files, which is how
// Stats learns how many writes each fsync covered.
type walSyncCounter struct {
	vfs.FS
	syncs *atomic.Int64
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

// walFile counts the syncs of one write-ahead log file. Pebble syncs a WAL
// with SyncData (through its syncing wrapper's Sync), but both are counted.
type walFile struct {
	vfs.File
	syncs *atomic.Int64
}

func (f walFile) Sync() error {
	f.syncs.Add(1)
	return f.File.Sync()
}

func (f walFile) SyncData() error {
	f.syncs.Add(1)
	return f.File.SyncData()
}
