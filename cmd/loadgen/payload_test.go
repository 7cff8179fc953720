package main

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// field is one decoded top-level field.
type field struct {
	typ protowire.Type
	str string
	num uint64
}

// decode parses b as a flat protobuf message, failing the test on any
// malformed byte.
func decode(t *testing.T, b []byte) map[protowire.Number]field {
	t.Helper()
	out := map[protowire.Number]field{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		var f field
		f.typ = typ
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				t.Fatalf("field %d: %v", num, protowire.ParseError(n))
			}
			f.str, b = v, b[n:]
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatalf("field %d: %v", num, protowire.ParseError(n))
			}
			f.num, b = v, b[n:]
		default:
			t.Fatalf("field %d: unexpected wire type %v", num, typ)
		}
		if _, dup := out[num]; dup {
			t.Fatalf("field %d appears twice", num)
		}
		out[num] = f
	}
	return out
}

func TestCartAddFields(t *testing.T) {
	for _, cart := range []int{0, 7, 999, 12345} {
		b, err := cartAdd(cart, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := decode(t, b)
		want := map[protowire.Number]field{
			fieldUserID:    {typ: protowire.BytesType, str: fmt.Sprintf("cart-%d", cart)},
			fieldProductID: {typ: protowire.BytesType, str: "widget"},
			fieldName:      {typ: protowire.BytesType, str: "Widget"},
			fieldQuantity:  {typ: protowire.VarintType, num: 1},
		}
		if len(got) != len(want) {
			t.Fatalf("cart %d: %d fields, want %d: %+v", cart, len(got), len(want), got)
		}
		for n, w := range want {
			if got[n] != w {
				t.Errorf("cart %d field %d = %+v, want %+v", cart, n, got[n], w)
			}
		}
	}
}

func TestCartAddPadding(t *testing.T) {
	natural, err := cartAdd(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	exact, impossible := 0, 0
	for size := len(natural); size <= 20000; size++ {
		b, err := cartAdd(3, size)
		if err != nil {
			// Only where the name's length prefix grows can a size be
			// out of reach; say so rather than return the wrong size.
			if !strings.Contains(err.Error(), "length prefix") {
				t.Fatalf("size %d: %v", size, err)
			}
			impossible++
			continue
		}
		if len(b) != size {
			t.Fatalf("size %d: got %d bytes", size, len(b))
		}
		f := decode(t, b)
		if f[fieldUserID].str != "cart-3" || f[fieldQuantity].num != 1 || !strings.HasPrefix(f[fieldName].str, "Widget") {
			t.Fatalf("size %d: fields changed by padding: %+v", size, f)
		}
		exact++
	}
	// The name's length prefix grows at 128 and 16384 bytes: one size
	// each cannot be hit.
	if impossible > 2 || exact == 0 {
		t.Errorf("%d sizes padded exactly, %d impossible; want at most 2 impossible", exact, impossible)
	}
	if _, err := cartAdd(3, len(natural)-1); err == nil {
		t.Error("a size below the natural size was accepted")
	}
}

func TestGetCartAndEcho(t *testing.T) {
	b, err := getCart(42, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := decode(t, b)
	if len(f) != 1 || f[fieldUserID].str != "cart-42" {
		t.Errorf("GetShoppingCart = %+v, want only user_id cart-42", f)
	}
	if _, err := getCart(42, 100); err == nil {
		t.Error("padding a GetShoppingCart was accepted")
	}
	// The echo payload is the very bytes cart-add sends, so the floor and
	// the proxied call move the same bytes.
	echo, _ := buildPayloads("echo", 5, 64)
	add, _ := buildPayloads("cart-add", 5, 64)
	for i := range echo {
		if string(echo[i]) != string(add[i]) || len(echo[i]) != 64 {
			t.Errorf("cart %d: echo %q, cart-add %q", i, echo[i], add[i])
		}
	}
	if _, err := buildPayloads("nope", 1, 0); err == nil {
		t.Error("unknown payload accepted")
	}
}
