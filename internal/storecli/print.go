package storecli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/cloudstate-go/cloudstate/store"
)

// printEvents prints the journal of opts.id after opts.after: a table of
// seq, type URL and payload, or one JSON object per event.
func printEvents(ctx context.Context, st reader, types *typeSource, opts *options, w io.Writer) error {
	var events []store.Event
	err := st.Replay(ctx, opts.id, opts.after, func(ev store.Event) error {
		events = append(events, ev)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read the journal of %q: %w", opts.id, err)
	}
	if len(events) == 0 {
		highest, err := st.HighestSeq(ctx, opts.id)
		if err != nil {
			return fmt.Errorf("read the journal of %q: %w", opts.id, err)
		}
		if highest == 0 {
			return &NotFoundError{What: "events", ID: opts.id}
		}
		return nil // all of them are at or before --after
	}
	urls := make([]string, len(events))
	for i, ev := range events {
		urls[i] = ev.Payload.GetTypeUrl()
	}
	types.load(ctx, urls)

	if opts.json {
		for _, ev := range events {
			obj := struct {
				Seq int64 `json:"seq"`
				payloadJSON
			}{ev.Seq, types.render(ev.Payload).forJSON()}
			if err := writeJSON(w, obj); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTYPE_URL\tPAYLOAD")
	for _, ev := range events {
		r := types.render(ev.Payload)
		fmt.Fprintf(tw, "%d\t%s\t%s\n", ev.Seq, r.typeURL, r.text())
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// printSnapshot prints the latest snapshot of opts.id.
func printSnapshot(ctx context.Context, st reader, types *typeSource, opts *options, w io.Writer) error {
	snap, ok, err := st.LatestSnapshot(ctx, opts.id)
	if err != nil {
		return fmt.Errorf("read the snapshot of %q: %w", opts.id, err)
	}
	if !ok {
		return &NotFoundError{What: "snapshot", ID: opts.id}
	}
	types.load(ctx, []string{snap.Payload.GetTypeUrl()})
	r := types.render(snap.Payload)
	if opts.json {
		return writeJSON(w, struct {
			PersistenceID string `json:"persistence_id"`
			Seq           int64  `json:"seq"`
			payloadJSON
		}{opts.id, snap.Seq, r.forJSON()})
	}
	_, err = fmt.Fprintf(w, "seq: %d\ntype_url: %s\n%s\n", snap.Seq, r.typeURL, r.indented())
	return err
}

// printValue prints the value stored under opts.id and its version; a
// deleted value shows its tombstone's version.
func printValue(ctx context.Context, st reader, types *typeSource, opts *options, w io.Writer) error {
	v, err := st.GetValue(ctx, opts.id)
	if err != nil {
		return fmt.Errorf("read the value of %q: %w", opts.id, err)
	}
	if v.Version == 0 {
		return &NotFoundError{What: "value", ID: opts.id}
	}
	if v.Payload == nil {
		if opts.json {
			return writeJSON(w, valueJSON{Key: opts.id, Version: v.Version, Deleted: true})
		}
		_, err := fmt.Fprintf(w, "version: %d\n(deleted)\n", v.Version)
		return err
	}
	types.load(ctx, []string{v.Payload.GetTypeUrl()})
	r := types.render(v.Payload)
	if opts.json {
		p := r.forJSON()
		return writeJSON(w, valueJSON{Key: opts.id, Version: v.Version, payloadJSON: &p})
	}
	_, err = fmt.Fprintf(w, "version: %d\ntype_url: %s\n%s\n", v.Version, r.typeURL, r.indented())
	return err
}

// valueJSON is a value in --json output; a deleted one has no payload.
type valueJSON struct {
	Key     string `json:"key"`
	Version int64  `json:"version"`
	Deleted bool   `json:"deleted"`
	*payloadJSON
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
