package pebble

// WithFences sets how many keys' fencing state the Store keeps in memory;
// tests make it tiny so that every write may find its state dropped.
func WithFences(n int) Option { return func(c *config) { c.fences = n } }
