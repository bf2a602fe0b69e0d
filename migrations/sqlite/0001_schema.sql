-- vephys store, SQLite dialect: the same tables as migrations/postgres, spelled for SQLite
-- (INTEGER PRIMARY KEY rowids, REAL, 0/1 booleans). Times are milliseconds since the Unix epoch.
-- JSON documents are TEXT; the views use json_extract where they look inside.

CREATE TABLE models (
    name            TEXT PRIMARY KEY,
    architecture    TEXT NOT NULL,
    input_size      INTEGER NOT NULL,
    weights_uri     TEXT NOT NULL DEFAULT '',
    weights_sha256  TEXT NOT NULL DEFAULT '',
    registered_at   INTEGER NOT NULL
);

CREATE TABLE model_layers (
    model     TEXT NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    name      TEXT NOT NULL,
    aliases   TEXT NOT NULL DEFAULT '[]',
    channels  INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    width     INTEGER NOT NULL,
    PRIMARY KEY (model, name)
);

CREATE TABLE workers (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    device         TEXT NOT NULL,
    memory_bytes   INTEGER NOT NULL,
    loaded_models  TEXT NOT NULL DEFAULT '[]',
    registered_at  INTEGER NOT NULL,
    last_seen_at   INTEGER NOT NULL
);

CREATE TABLE campaigns (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    model         TEXT NOT NULL REFERENCES models (name),
    -- sha256 of the canonical spec: submitting the same spec again finds this row.
    spec_hash     TEXT NOT NULL UNIQUE,
    spec_toml     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    cancelled_at  INTEGER
);

-- state: waiting (for its synthesis job) -> queued -> leased -> succeeded | failed | cancelled;
-- a failed attempt or an expired lease goes back to queued until max_attempts.
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    campaign_id       INTEGER NOT NULL REFERENCES campaigns (id),
    content_key       TEXT NOT NULL,
    model             TEXT NOT NULL,
    layer             TEXT NOT NULL,
    filter            INTEGER NOT NULL,
    probe             TEXT NOT NULL,
    params            TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    depends_on        INTEGER REFERENCES jobs (id),
    state             TEXT NOT NULL CHECK (state IN
                        ('waiting', 'queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    -- The fencing token: bumped by every lease, required by every write of the lessee.
    attempt           INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    not_before        INTEGER NOT NULL DEFAULT 0,
    worker_id         INTEGER REFERENCES workers (id),
    leased_at         INTEGER,
    lease_expires_at  INTEGER,
    progress          REAL NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    UNIQUE (campaign_id, content_key)
);

-- The claim walks queued jobs in id order; a partial index keeps that walk off finished rows.
CREATE INDEX jobs_queued ON jobs (id) WHERE state = 'queued';
-- The reaper looks for expired leases only.
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'leased';
CREATE INDEX jobs_depends_on ON jobs (depends_on) WHERE depends_on IS NOT NULL;
CREATE INDEX jobs_campaign ON jobs (campaign_id, layer, probe, state);

-- One row per finished attempt, whatever its outcome: the history a failed job keeps.
CREATE TABLE attempts (
    job_id       INTEGER NOT NULL REFERENCES jobs (id),
    attempt      INTEGER NOT NULL,
    worker_id    INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'expired')),
    error        TEXT,
    permanent    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);

-- One row per succeeded job (the primary key makes a second completion impossible).
CREATE TABLE results (
    job_id            INTEGER PRIMARY KEY REFERENCES jobs (id),
    attempt           INTEGER NOT NULL,
    max_act           REAL NOT NULL,
    mean_act          REAL NOT NULL,
    status            TEXT NOT NULL,
    derived           TEXT NOT NULL DEFAULT '{}',
    weights_sha256    TEXT NOT NULL,
    params            TEXT NOT NULL,
    params_hash       TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    device            TEXT NOT NULL,
    library_versions  TEXT NOT NULL DEFAULT '{}',
    worker            TEXT NOT NULL,
    duration_ms       INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);

CREATE TABLE tuning_points (
    job_id    INTEGER NOT NULL REFERENCES jobs (id),
    position  INTEGER NOT NULL,
    probe     TEXT NOT NULL,
    x         REAL NOT NULL,
    label     TEXT,
    max_act   REAL NOT NULL,
    mean_act  REAL NOT NULL,
    PRIMARY KEY (job_id, position)
);

CREATE TABLE artifacts (
    job_id   INTEGER NOT NULL REFERENCES jobs (id),
    attempt  INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    uri      TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    bytes    INTEGER NOT NULL,
    PRIMARY KEY (job_id, kind)
);
