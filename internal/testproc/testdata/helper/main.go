// Command helper is the child process of testproc's tests. Its first
// argument picks what it does:
//
//	print CODE   write to stdout and stderr, then exit with status CODE
//	term         say "ready", then on SIGTERM say "got SIGTERM" and exit 0
//	ignore       ignore SIGTERM, say "ready" and wait
//	serve ADDR N serve GET /ready on ADDR: 503 for the first N, then 200
//
// The waiting ones exit by themselves after a minute, so a test that loses
// one leaves nothing running for long.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: helper print CODE | term | ignore | serve ADDR N")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "print":
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Println("to stdout", os.Getenv("TESTPROC_WORD"))
		fmt.Fprintln(os.Stderr, "to stderr")
		if wd, err := os.Getwd(); err == nil {
			fmt.Println("in", wd)
		}
		os.Exit(code)
	case "term":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		fmt.Println("ready")
		select {
		case <-sigs:
			fmt.Println("got SIGTERM")
		case <-time.After(time.Minute):
		}
	case "ignore":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Minute)
	case "serve":
		notYet, _ := strconv.ParseInt(os.Args[3], 10, 64)
		var calls atomic.Int64
		http.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) <= notYet {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		go func() {
			time.Sleep(time.Minute)
			os.Exit(0)
		}()
		if err := http.ListenAndServe(os.Args[2], nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
