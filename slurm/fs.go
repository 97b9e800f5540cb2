package slurm

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// Network and cluster file systems, by statfs(2) magic.
var sharedFS = map[int64]string{
	0x6969: "nfs", 0xff534d42: "cifs", 0xfe534d42: "smb2", 0x00c36400: "ceph", 0x0bd00bd0: "lustre",
	0x47504653: "gpfs", 0x5346414f: "afs", 0x65735546: "fuse", 0x01161970: "gfs2", 0x7461636f: "ocfs2",
}

var localFS = map[int64]string{0xef53: "ext4", 0x58465342: "xfs", 0x9123683e: "btrfs", 0x01021994: "tmpfs", 0x2fc12fc1: "zfs", 0x794c7630: "overlayfs"}

// SharedFS names the file system dir is on and tells whether other hosts
// can mount it.
func SharedFS(dir string) (string, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown", false
	}
	t := int64(st.Type)
	if n, ok := sharedFS[t]; ok {
		return n, true
	}
	if n, ok := localFS[t]; ok {
		return n, false
	}
	return "type 0x" + strconv.FormatInt(t, 16), false
}
