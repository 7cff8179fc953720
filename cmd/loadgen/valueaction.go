package main

// Value-entity and action scenarios, each on its own stack:
//   - the value-entity cart sample (same AddLineItem field numbers as the
//     event-sourced cart, so the cart-add payload fits it unchanged);
//   - the unary Echo action of the end-to-end test function, whose input
//     message mirrors AddLineItem field for field, so it receives exactly
//     the bytes the echo floor does and replies with them.
//
// `loadgen bench --scenarios echo,ve-add,action-echo` measures them against
// the floor in the same interleaved rounds.
func init() {
	stacks = append(stacks,
		stack{name: "valuecart/memory", function: "./samples/valuecart"},
		stack{name: "testfunction2", function: "./test/e2e/testfunction2"},
	)
	scenarios = append(scenarios,
		scenario{name: "ve-add", title: "value-entity AddItem via proxy", stack: "valuecart/memory",
			method: "/com.example.valueentity.shoppingcart.ShoppingCart/AddItem", payload: "cart-add", carts: 1000},
		scenario{name: "action-echo", title: "unary echo action via proxy", stack: "testfunction2",
			method: "/cloudstate.e2e2.Actions/Echo", payload: "cart-add", carts: 1000},
	)
}
