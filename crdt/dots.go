package crdt

import (
	"cmp"
	"fmt"
	"maps"
	"strings"
)

// dot identifies one update: the node that made it and that node's counter.
type dot struct {
	node    string
	counter uint64
}

func compareDots(a, b dot) int {
	if c := strings.Compare(a.node, b.node); c != 0 {
		return c
	}
	return cmp.Compare(a.counter, b.counter)
}

// vv is a version vector: per node, the highest counter whose update this
// replica has seen. Full-state merges keep every replica's history causally
// complete, so a dot at or below its node's entry has been seen. A nil vv is
// empty; counters are never zero.
type vv map[string]uint64

func (v vv) covers(d dot) bool { return d.counter <= v[d.node] }

// observe raises node's entry to c and returns the (possibly new) vector.
func (v vv) observe(node string, c uint64) vv {
	if v == nil {
		v = make(vv, 1)
	}
	if c > v[node] {
		v[node] = c
	}
	return v
}

// join raises every entry to o's and returns the (possibly new) vector.
func (v vv) join(o vv) vv {
	for n, c := range o {
		v = v.observe(n, c)
	}
	return v
}

// nextDot returns the dot for a local update at o.node: the enclosing ORMap's
// dot when nested, else the node's next counter.
func (v vv) nextDot(o op) (dot, error) {
	if o.dot != 0 {
		return dot{o.node, o.dot}, nil
	}
	c := v[o.node] + 1
	if c == 0 {
		return dot{}, fmt.Errorf("%w: dot counter of node %q overflows", ErrInvalidDelta, o.node)
	}
	return dot{o.node, c}, nil
}

func (v vv) clone() vv { return maps.Clone(v) }

// keepDots merges the live dots two replicas hold for one element or key.
// A dot survives when both hold it, or when one holds it and the other has
// not seen it; a dot the other has seen but no longer holds was removed
// there (or superseded by a later update), so it is dropped. Both inputs are
// sorted by compareDots and so is the result. takeB copies an item kept
// from b, so the result never aliases b's state.
func keepDots[T any](a, b []T, dotOf func(T) dot, ctxA, ctxB vv, takeB func(T) T) []T {
	var dst []T
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var c int
		switch {
		case j == len(b):
			c = -1
		case i == len(a):
			c = 1
		default:
			c = compareDots(dotOf(a[i]), dotOf(b[j]))
		}
		switch {
		case c < 0:
			if !ctxB.covers(dotOf(a[i])) {
				dst = append(dst, a[i])
			}
			i++
		case c > 0:
			if !ctxA.covers(dotOf(b[j])) {
				dst = append(dst, takeB(b[j]))
			}
			j++
		default:
			dst = append(dst, a[i])
			i++
			j++
		}
	}
	return dst
}

// sameDots reports whether two dot lists hold the same dots.
func sameDots[T any](a, b []T, dotOf func(T) dot) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if dotOf(a[i]) != dotOf(b[i]) {
			return false
		}
	}
	return true
}

func idDot(d dot) dot { return d }
