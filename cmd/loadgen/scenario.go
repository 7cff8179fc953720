package main

// A stack is what a scenario's calls go to: the echo server alone, or a
// user function with a proxy in front of it. The bench starts each stack
// once, runs its scenarios at every client count, and stops it.
type stack struct {
	name string
	// function is the package, relative to the repository root, built and
	// run as the user function behind a proxy. Empty means the echo server,
	// with no proxy.
	function string
	// proxyFlags are added to the proxy's command line: a store, a
	// passivation timeout, and so on.
	proxyFlags []string
}

// A scenario is one kind of call, measured at every client count.
type scenario struct {
	name    string // short id; --scenarios selects by it
	title   string // row label in the results
	stack   string // name of a stack
	method  string // full gRPC method name
	payload string // name of a payloadBuilder
	carts   int    // entity keys the calls are spread over
}

// Names the bench's fixed measurements refer to.
const (
	echoStack = "echo"
	// cartStack is the stack the proxy's own facts (start-to-ready, memory
	// per entity) are measured on.
	cartStack = "shoppingcart/memory"
	// floorScenario is the baseline every other scenario is compared with.
	floorScenario = "echo"
	// cartScenario is the scenario the throughput and latency targets are
	// set for.
	cartScenario  = "es-add"
	cartAddMethod = "/com.example.shoppingcart.ShoppingCart/AddItem"
	cartGetMethod = "/com.example.shoppingcart.ShoppingCart/GetCart"
)

// stacks lists every stack a scenario may name, in the order they run.
var stacks = []stack{
	{name: echoStack},
	{name: cartStack, function: "./samples/shoppingcart"},
}

// scenarios is what bench measures, in order. To add one (value entities,
// actions, another store), add its stack above and a row here; payloads
// live in payload.go.
var scenarios = []scenario{
	{name: floorScenario, title: "echo, no proxy (floor)", stack: echoStack, method: echoMethod, payload: "echo", carts: 1000},
	{name: cartScenario, title: "event-sourced AddItem via proxy", stack: cartStack, method: cartAddMethod, payload: "cart-add", carts: 1000},
	{name: "es-get", title: "event-sourced GetCart via proxy", stack: cartStack, method: cartGetMethod, payload: "get-cart", carts: 1000},
}

// findStack returns the stack called name, or false.
func findStack(name string) (stack, bool) {
	for _, s := range stacks {
		if s.name == name {
			return s, true
		}
	}
	return stack{}, false
}
