package main

import "syscall"

// childProcAttr has the kernel kill a child if the load generator dies
// without cleaning up (kill -9), so no proxy is left holding a port.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
