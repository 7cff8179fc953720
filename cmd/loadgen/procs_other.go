//go:build !linux

package main

import "syscall"

// childProcAttr has nothing to add outside Linux; stopAll still stops
// every child on a normal exit or interrupt.
func childProcAttr() *syscall.SysProcAttr { return nil }
