package sdk

import (
	"context"
	"fmt"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
)

// crdtHost owns an entity activation's CRDT: the value, whether the proxy
// knows it exists, and what the running handler may do with it.
type crdtHost struct {
	root CRDT // nil until the CRDT exists
	t    *crdtTree
	// announced is set once the proxy knows the CRDT: it sent it, or the
	// function sent a change. A CRDT an accessor created but no handler
	// changed is forgotten, so that it cannot clash with the type the
	// proxy later sends.
	announced bool

	// The handler running now.
	fx       *effects
	writable bool
	start    CRDT      // root when the handler started
	saved    bool      // the value before the first change is in backup
	backup   CRDT      // copy of start, in backupTree
	backupT  *crdtTree // the tree of backup
	touched  bool      // a mutator was called
}

func newCRDTHost() *crdtHost {
	h := &crdtHost{}
	h.t = &crdtTree{h: h}
	return h
}

// misuse fails the running handler.
func (h *crdtHost) misuse(err error) {
	if h.fx != nil {
		h.fx.fail(fmt.Errorf("crdt: %w", err))
	}
}

// begin prepares for a handler with effects fx.
func (h *crdtHost) begin(fx *effects, writable bool) {
	h.fx, h.writable, h.start = fx, writable, h.root
	h.saved, h.backup, h.backupT, h.touched = false, nil, nil, false
}

// saveForRollback copies the value before the handler's first change.
func (h *crdtHost) saveForRollback() {
	if h.saved {
		return
	}
	h.saved = true
	h.backupT = &crdtTree{h: h}
	if h.start != nil {
		h.backup = h.start.clone(h.backupT, nil)
	}
}

// end finishes the handler. If it succeeded in a context that may change
// the CRDT, end returns the delta to send the proxy (nil if nothing
// changed); otherwise it undoes the handler's changes.
func (h *crdtHost) end(succeeded bool) *protocol.CrdtDelta {
	defer func() {
		h.fx, h.writable, h.start, h.backup, h.backupT = nil, false, nil, nil, nil
	}()
	if !succeeded || !h.writable {
		if h.saved {
			h.t.dead = true
			h.t, h.root = h.backupT, h.backup
		} else {
			h.root = h.start
		}
		if h.root != nil {
			h.root.commit() // forgets registers handed out but not set
		}
		return nil
	}
	if h.root == nil {
		return nil
	}
	var d *protocol.CrdtDelta
	switch {
	case h.announced:
		d = h.root.delta()
	case h.touched:
		d = h.root.fullDelta()
	default:
		h.root = nil
		return nil
	}
	h.root.commit()
	if d != nil {
		h.announced = true
	}
	return d
}

// remove forgets the CRDT after a delete.
func (h *crdtHost) remove() {
	h.t.dead = true
	h.t = &crdtTree{h: h}
	h.root, h.announced = nil, false
}

// applyDelta applies a delta from the proxy.
func (h *crdtHost) applyDelta(d *protocol.CrdtDelta) error {
	k := kindOfDelta(d)
	if k == 0 {
		return fmt.Errorf("an empty delta")
	}
	if h.root == nil {
		h.root = newCRDT(k, h.t, nil, nil)
	} else if h.root.Kind() != k {
		return fmt.Errorf("a %s delta for a %s", k, h.root.Kind())
	}
	if err := h.root.applyDelta(d); err != nil {
		return err
	}
	h.announced = true
	return nil
}

// fullDelta returns the value as a delta from empty, nil if there is none.
func (h *crdtHost) fullDelta() *protocol.CrdtDelta {
	if h.root == nil || !h.announced {
		return nil
	}
	return h.root.fullDelta()
}

// crdtAccess gives every context of a CRDT entity the entity's CRDT.
type crdtAccess struct {
	h *crdtHost
}

// State returns the entity's CRDT, or nil if it has none yet.
func (a crdtAccess) State() CRDT { return a.h.root }

// GCounter returns the entity's CRDT as a GCounter, creating an empty one
// if the entity has none. The proxy learns about a new CRDT with its first
// change; a CRDT of another type fails the handler.
func (a crdtAccess) GCounter() *GCounter { return rootAs[*GCounter](a.h, KindGCounter) }

// PNCounter returns the entity's CRDT as a PNCounter (see GCounter).
func (a crdtAccess) PNCounter() *PNCounter { return rootAs[*PNCounter](a.h, KindPNCounter) }

// GSet returns the entity's CRDT as a GSet (see GCounter).
func (a crdtAccess) GSet() *GSet { return rootAs[*GSet](a.h, KindGSet) }

// ORSet returns the entity's CRDT as an ORSet (see GCounter).
func (a crdtAccess) ORSet() *ORSet { return rootAs[*ORSet](a.h, KindORSet) }

// LWWRegister returns the entity's CRDT as an LWWRegister (see GCounter).
// A new register has no value until its first Set.
func (a crdtAccess) LWWRegister() *LWWRegister {
	return rootAs[*LWWRegister](a.h, KindLWWRegister)
}

// Flag returns the entity's CRDT as a Flag (see GCounter).
func (a crdtAccess) Flag() *Flag { return rootAs[*Flag](a.h, KindFlag) }

// ORMap returns the entity's CRDT as an ORMap (see GCounter).
func (a crdtAccess) ORMap() *ORMap { return rootAs[*ORMap](a.h, KindORMap) }

// Vote returns the entity's CRDT as a Vote (see GCounter). A new vote
// counts one voter (this node) that votes no.
func (a crdtAccess) Vote() *Vote { return rootAs[*Vote](a.h, KindVote) }

func rootAs[T CRDT](h *crdtHost, kind CRDTKind) T {
	if h.root == nil {
		h.root = newCRDT(kind, h.t, nil, nil)
	}
	if c, ok := h.root.(T); ok {
		return c
	}
	h.misuse(fmt.Errorf("the entity's CRDT is a %s, not a %s", h.root.Kind(), kind))
	return placeholder[T](kind)
}

// CRDTContext is what a CRDT entity's command handler can see and do
// besides replying: the command's identity, the entity's CRDT (State and
// the typed accessors), deleting it, the write consistency, failing,
// forwarding and side effects. It is valid only until the handler returns
// and must not be shared with other goroutines.
type CRDTContext struct {
	crdtAccess
	ctx  context.Context
	inst *crdtInstance
	cmd  *protocol.Command

	fx      effects
	deleted bool
	wc      WriteConsistency
}

// Context returns the context of the entity's stream; it is cancelled when
// the proxy goes away.
func (c *CRDTContext) Context() context.Context { return c.ctx }

// EntityID returns the id of the entity the command is for.
func (c *CRDTContext) EntityID() string { return c.inst.entityID }

// CommandName returns the gRPC method name of the command.
func (c *CRDTContext) CommandName() string { return c.cmd.GetName() }

// CommandID returns the command's id, unique within the entity's stream.
func (c *CRDTContext) CommandID() int64 { return c.cmd.GetId() }

// Metadata returns the command's metadata (usually empty: proxies do not
// send request headers to entities by default).
func (c *CRDTContext) Metadata() Metadata { return metadataFromProto(c.cmd.GetMetadata()) }

// Streamed reports whether the client called a server-streaming method.
func (c *CRDTContext) Streamed() bool { return c.cmd.GetStreamed() }

// OpenStreams returns how many streamed calls of method (all methods if
// empty) are open on this entity activation, not counting this command.
func (c *CRDTContext) OpenStreams(method string) int { return c.inst.openStreams(method) }

// Delete deletes the CRDT everywhere, for good, when the command succeeds:
// the proxy then ends the entity and fails every later command for it.
// Other changes of the same command are dropped.
func (c *CRDTContext) Delete() { c.deleted = true }

// SetWriteConsistency sets how far the proxy replicates this command's
// change (or delete) before it answers; the default is WriteLocal.
func (c *CRDTContext) SetWriteConsistency(wc WriteConsistency) { c.wc = wc }

// Fail returns a Failure with the formatted description and also records
// it, so the command fails even if the handler does not return the error.
func (c *CRDTContext) Fail(format string, args ...any) error { return c.fx.failf(format, args...) }

// Forward hands the command on to method of service (full name) with msg as
// input, after the CRDT change (if any) is written; that method's reply
// becomes the reply to the client. The handler should return a nil reply.
func (c *CRDTContext) Forward(service, method string, msg proto.Message, opts ...EffectOption) {
	c.fx.addForward(service, method, msg, opts)
}

// SideEffect asks the proxy to call method of service with msg after the
// CRDT change (if any) is written, discarding the result. Side effects are
// dropped when the command fails.
func (c *CRDTContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}

// SetReplyMetadata attaches metadata to the reply.
func (c *CRDTContext) SetReplyMetadata(md Metadata) { c.fx.replyMetadata = md }

// CRDTStreamContext is the context of a streamed command's handler: a
// CRDTContext that can also register the stream's callbacks. Out is the
// method's output type.
type CRDTStreamContext[Out proto.Message] struct {
	*CRDTContext
	st *crdtStream
}

// OnChange registers fn to run after every later change of the CRDT while
// the stream is open: deltas from the proxy, and changes made by other
// commands and cancellations of this entity. A non-nil reply is sent to the
// client; ctx may also forward, add side effects and end the stream. An
// error (or ctx.Fail) sends the client the failure and ends the stream. fn
// may read the CRDT but not change it. Registering OnChange (or OnCancel)
// keeps the stream open after the handler's reply.
func (c *CRDTStreamContext[Out]) OnChange(fn func(ctx *CRDTChangeContext) (Out, error)) {
	if fn == nil {
		c.st.onChange = nil
		return
	}
	c.st.onChange = func(cc *CRDTChangeContext) (proto.Message, error) {
		reply, err := fn(cc)
		if err != nil {
			return nil, err
		}
		return reply, nil
	}
}

// OnCancel registers fn to run when the client goes away from the open
// stream (or the stream ends otherwise without the entity ending it). fn
// may change the CRDT and add side effects; if it fails, its changes are
// undone.
func (c *CRDTStreamContext[Out]) OnCancel(fn func(ctx *CRDTCancelContext) error) {
	c.st.onCancel = fn
}

// EndStream ends the client's stream after the handler's reply, whatever
// callbacks were registered.
func (c *CRDTStreamContext[Out]) EndStream() { c.st.ended = true }

// CRDTChangeContext is the context of an OnChange callback: it can read the
// CRDT, reply to the stream's client, end the stream, forward and add side
// effects. It is valid only until the callback returns.
type CRDTChangeContext struct {
	crdtAccess
	ctx   context.Context
	inst  *crdtInstance
	cmd   *protocol.Command
	fx    effects
	ended bool
}

// Context returns the context of the entity's stream.
func (c *CRDTChangeContext) Context() context.Context { return c.ctx }

// EntityID returns the entity's id.
func (c *CRDTChangeContext) EntityID() string { return c.inst.entityID }

// CommandName returns the method name of the streamed command.
func (c *CRDTChangeContext) CommandName() string { return c.cmd.GetName() }

// CommandID returns the id of the streamed command.
func (c *CRDTChangeContext) CommandID() int64 { return c.cmd.GetId() }

// OpenStreams returns how many streamed calls of method (all methods if
// empty) are open on this entity activation, this one included.
func (c *CRDTChangeContext) OpenStreams(method string) int { return c.inst.openStreams(method) }

// EndStream ends the client's stream after this callback's message.
func (c *CRDTChangeContext) EndStream() { c.ended = true }

// Fail returns a Failure with the formatted description and records it:
// the client gets the failure and the stream ends.
func (c *CRDTChangeContext) Fail(format string, args ...any) error {
	return c.fx.failf(format, args...)
}

// Forward sends the client, as this stream's next message, the reply of
// method of service called with msg. The callback should return a nil
// reply.
func (c *CRDTChangeContext) Forward(service, method string, msg proto.Message, opts ...EffectOption) {
	c.fx.addForward(service, method, msg, opts)
}

// SideEffect asks the proxy to call method of service with msg, discarding
// the result.
func (c *CRDTChangeContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}

// SetReplyMetadata attaches metadata to the message sent.
func (c *CRDTChangeContext) SetReplyMetadata(md Metadata) { c.fx.replyMetadata = md }

// CRDTCancelContext is the context of an OnCancel callback: it can change
// or delete the CRDT and add side effects. It is valid only until the
// callback returns.
type CRDTCancelContext struct {
	crdtAccess
	ctx     context.Context
	inst    *crdtInstance
	cmd     *protocol.Command
	fx      effects
	deleted bool
	wc      WriteConsistency
}

// Context returns the context of the entity's stream.
func (c *CRDTCancelContext) Context() context.Context { return c.ctx }

// EntityID returns the entity's id.
func (c *CRDTCancelContext) EntityID() string { return c.inst.entityID }

// CommandName returns the method name of the cancelled command.
func (c *CRDTCancelContext) CommandName() string { return c.cmd.GetName() }

// CommandID returns the id of the cancelled command.
func (c *CRDTCancelContext) CommandID() int64 { return c.cmd.GetId() }

// OpenStreams returns how many streamed calls of method (all methods if
// empty) are still open on this entity activation; the cancelled one no
// longer counts.
func (c *CRDTCancelContext) OpenStreams(method string) int { return c.inst.openStreams(method) }

// Delete deletes the CRDT everywhere, for good (see CRDTContext.Delete).
func (c *CRDTCancelContext) Delete() { c.deleted = true }

// SetWriteConsistency sets how far the proxy replicates the change.
func (c *CRDTCancelContext) SetWriteConsistency(wc WriteConsistency) { c.wc = wc }

// SideEffect asks the proxy to call method of service with msg after the
// change is written, discarding the result. (The reference proxy drops the
// side effects of a cancellation; this project's proxy performs them.)
func (c *CRDTCancelContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}
