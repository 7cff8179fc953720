package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
)

// startPprof serves Go's profiling endpoints on $CLOUDSTATE_PPROF_ADDR
// (e.g. 127.0.0.1:6060) when it is set, for diagnosing performance; it is
// off by default and never on the public port.
func startPprof(log *slog.Logger) {
	addr := os.Getenv("CLOUDSTATE_PPROF_ADDR")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() {
		log.Info("pprof listening", "addr", addr)
		if err := http.ListenAndServe(addr, mux); err != nil {
			log.Error("pprof server failed", "addr", addr, "err", err)
		}
	}()
}
