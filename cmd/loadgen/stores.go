package main

import "os"

// Durable-store stacks: the shopping cart behind a proxy that keeps its
// journal in Pebble or PostgreSQL, every acknowledged write synced. They
// need a place for the data that the bench does not own, so each is
// registered only when its environment variable names one:
//
//	LOADGEN_PEBBLE_DIR=/tmp/bench-pebble   a directory for the Pebble store
//	                                       (created if missing; remove it after)
//	LOADGEN_POSTGRES=postgres://...        a database (schema via search_path)
//
// Then `loadgen bench --scenarios es-add,es-add-pebble,es-add-postgres`
// measures the three stores in the same interleaved rounds.
const (
	pebbleDirEnv = "LOADGEN_PEBBLE_DIR"
	postgresEnv  = "LOADGEN_POSTGRES"
)

func init() {
	if dir := os.Getenv(pebbleDirEnv); dir != "" {
		stacks = append(stacks, stack{name: "shoppingcart/pebble", function: "./samples/shoppingcart",
			proxyFlags: []string{"--store", "pebble:" + dir}})
		scenarios = append(scenarios, scenario{name: "es-add-pebble", title: "event-sourced AddItem via proxy, Pebble",
			stack: "shoppingcart/pebble", method: cartAddMethod, payload: "cart-add", carts: 1000})
	}
	if dsn := os.Getenv(postgresEnv); dsn != "" {
		stacks = append(stacks, stack{name: "shoppingcart/postgres", function: "./samples/shoppingcart",
			proxyFlags: []string{"--store", dsn}})
		scenarios = append(scenarios, scenario{name: "es-add-postgres", title: "event-sourced AddItem via proxy, PostgreSQL",
			stack: "shoppingcart/postgres", method: cartAddMethod, payload: "cart-add", carts: 1000})
	}
}
