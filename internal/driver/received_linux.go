package driver

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// bytesReceived returns the bytes the kernel has received on TCP
// connection c (TCP_INFO's tcpi_bytes_received), without wrapping c,
// which gRPC reads as a *net.TCPConn (see conns). A kernel that does not
// count them (before Linux 4.1) reports 0 throughout: no change, no sign
// of life.
func bytesReceived(c net.Conn) (uint64, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var infoErr error
	if err := rc.Control(func(fd uintptr) {
		info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || infoErr != nil {
		return 0, false
	}
	return info.Bytes_received, true
}
