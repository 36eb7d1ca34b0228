package injector

import (
	"io/fs"
	"syscall"
)

// sysStamp adds the inode and change time, so that a file replaced by rename
// or rewritten in place with the same size and modification time still
// counts as changed.
func sysStamp(fi fs.FileInfo, s *fileStamp) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.dev = uint64(st.Dev)
		s.ino = st.Ino
		s.ctime = st.Ctim.Nano()
	}
}
