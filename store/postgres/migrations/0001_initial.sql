-- Initial schema of the PostgreSQL store: journal, snapshots and values.
--
-- Identifiers (persistence ids, value keys, tags) are bytea, not text: the
-- proxy builds them from entity ids, which are arbitrary Go strings and may
-- hold bytes PostgreSQL text cannot (NUL, invalid UTF-8). Type URLs are text
-- for readability; the store rejects the few it cannot hold before writing.

-- The events of event-sourced entities. The primary key is the fence: one
-- row per (persistence id, sequence number).
CREATE TABLE journal (
    -- Global insertion order, for consumers of the event log.
    ordering        bigserial   NOT NULL,
    persistence_id  bytea       NOT NULL,
    sequence_number bigint      NOT NULL CHECK (sequence_number > 0),
    -- The part of persistence_id before the first '|': the entity type's
    -- persistence id, the event log a consumer subscribes to.
    tag             bytea       NOT NULL,
    type_url        text        NOT NULL,
    bytes           bytea       NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_pk PRIMARY KEY (persistence_id, sequence_number)
);
CREATE UNIQUE INDEX journal_ordering_idx ON journal (ordering);

-- The latest snapshot of each event-sourced entity; a save replaces the row
-- unless the stored snapshot is newer.
CREATE TABLE snapshots (
    persistence_id  bytea       NOT NULL,
    sequence_number bigint      NOT NULL,
    type_url        text        NOT NULL,
    bytes           bytea       NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pk PRIMARY KEY (persistence_id)
);

-- The state of value entities. A deleted value keeps its row as a tombstone
-- (type_url and bytes NULL) so that its version keeps growing.
CREATE TABLE entity_values (
    key        bytea       NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    type_url   text,
    bytes      bytea,
    written_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT entity_values_pk PRIMARY KEY (key),
    CONSTRAINT entity_values_tombstone CHECK ((type_url IS NULL) = (bytes IS NULL))
);
