-- 002: an append-only event log (VM process died, cycle failed, ...), rendered through the catalog.

CREATE TABLE events (
    event_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    time       TEXT NOT NULL,
    element_id TEXT,
    kind       TEXT NOT NULL,
    message_id TEXT NOT NULL,
    args       TEXT NOT NULL
);
CREATE INDEX events_by_element ON events (element_id, time);
CREATE INDEX events_by_time ON events (time);

-- The catalog key and arguments of a job's description, so each surface can show it in its own language.
ALTER TABLE jobs ADD COLUMN description_message_id TEXT;
ALTER TABLE jobs ADD COLUMN description_args TEXT NOT NULL DEFAULT '[]';
