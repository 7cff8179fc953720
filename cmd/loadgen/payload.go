package main

import (
	"fmt"
	"sort"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// A payloadBuilder returns the request bytes for cart i. When size is
// greater than zero the message is padded to exactly size bytes, so the
// same payload can be compared across targets and sizes.
type payloadBuilder func(cart, size int) ([]byte, error)

// payloads are the request bodies loadgen can send, by --payload name.
// Messages are written by hand with protowire so the load generator does
// not depend on any sample's generated package.
var payloads = map[string]payloadBuilder{
	// com.example.shoppingcart.AddLineItem for cart "cart-<i>".
	"cart-add": cartAdd,
	// The same bytes as cart-add: the echo server does not decode them, and
	// sending identical bytes makes the echo floor directly comparable.
	"echo": cartAdd,
	// com.example.shoppingcart.GetShoppingCart for cart "cart-<i>".
	"get-cart": getCart,
}

// payloadNames lists the keys of payloads, sorted, for help and errors.
func payloadNames() []string {
	names := make([]string, 0, len(payloads))
	for n := range payloads {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// buildPayloads returns the request bytes for carts 0..carts-1, built once
// before the clock starts.
func buildPayloads(name string, carts, size int) ([][]byte, error) {
	b, ok := payloads[name]
	if !ok {
		return nil, fmt.Errorf("unknown payload %q (known: %v)", name, payloadNames())
	}
	if carts < 1 {
		return nil, fmt.Errorf("need at least one cart, got %d", carts)
	}
	out := make([][]byte, carts)
	for i := range out {
		p, err := b(i, size)
		if err != nil {
			return nil, fmt.Errorf("payload %s for cart %d: %w", name, i, err)
		}
		out[i] = p
	}
	return out, nil
}

// cartID is the entity key of cart i.
func cartID(i int) string { return "cart-" + strconv.Itoa(i) }

// Field numbers of AddLineItem and GetShoppingCart in the shopping-cart
// sample's proto.
const (
	fieldUserID    = 1
	fieldProductID = 2
	fieldName      = 3
	fieldQuantity  = 4
)

// The line item every cart-add call adds. One product keeps each cart's
// state to one line whose quantity grows, so the cost per call does not
// drift as the run goes on.
const (
	itemProductID = "widget"
	itemName      = "Widget"
	itemQuantity  = 1
)

// cartAdd encodes AddLineItem{user_id, product_id, name, quantity}. Padding
// goes into the name, which the sample stores but does not interpret.
func cartAdd(cart, size int) ([]byte, error) {
	encode := func(name string) []byte {
		var b []byte
		b = protowire.AppendTag(b, fieldUserID, protowire.BytesType)
		b = protowire.AppendString(b, cartID(cart))
		b = protowire.AppendTag(b, fieldProductID, protowire.BytesType)
		b = protowire.AppendString(b, itemProductID)
		b = protowire.AppendTag(b, fieldName, protowire.BytesType)
		b = protowire.AppendString(b, name)
		b = protowire.AppendTag(b, fieldQuantity, protowire.VarintType)
		b = protowire.AppendVarint(b, itemQuantity)
		return b
	}
	b := encode(itemName)
	if size <= 0 || size == len(b) {
		return b, nil
	}
	if size < len(b) {
		return nil, fmt.Errorf("payload size %d is less than the unpadded message (%d bytes)", size, len(b))
	}
	// The name's length prefix may grow by a byte as the name grows, so
	// try the longest name that could fit and shorten it until it does.
	for n := len(itemName) + size - len(b); n >= len(itemName); n-- {
		name := itemName + string(padding(n-len(itemName)))
		if p := encode(name); len(p) == size {
			return p, nil
		} else if len(p) < size {
			break
		}
	}
	return nil, fmt.Errorf("an AddLineItem cannot be exactly %d bytes (a length prefix grows there); try %d", size, size+1)
}

// getCart encodes GetShoppingCart{user_id}; it has nowhere to put padding.
func getCart(cart, size int) ([]byte, error) {
	var b []byte
	b = protowire.AppendTag(b, fieldUserID, protowire.BytesType)
	b = protowire.AppendString(b, cartID(cart))
	if size > 0 && size != len(b) {
		return nil, fmt.Errorf("a GetShoppingCart cannot be padded (it is %d bytes)", len(b))
	}
	return b, nil
}

// padding returns n printable bytes.
func padding(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = 'x'
	}
	return p
}
