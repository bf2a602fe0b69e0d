-- vephys store, Postgres dialect. Times are milliseconds since the Unix epoch (BIGINT) so the
-- coordinator's lease arithmetic is identical on Postgres and SQLite. JSON documents are TEXT:
-- the coordinator writes them whole and the views cast to jsonb where they look inside.

CREATE TABLE models (
    name            TEXT PRIMARY KEY,
    architecture    TEXT NOT NULL,
    input_size      BIGINT NOT NULL,
    weights_uri     TEXT NOT NULL DEFAULT '',
    weights_sha256  TEXT NOT NULL DEFAULT '',
    registered_at   BIGINT NOT NULL
);

CREATE TABLE model_layers (
    model     TEXT NOT NULL REFERENCES models (name) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    name      TEXT NOT NULL,
    aliases   TEXT NOT NULL DEFAULT '[]',
    channels  BIGINT NOT NULL,
    height    BIGINT NOT NULL,
    width     BIGINT NOT NULL,
    PRIMARY KEY (model, name)
);

CREATE TABLE workers (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT NOT NULL,
    device         TEXT NOT NULL,
    memory_bytes   BIGINT NOT NULL,
    loaded_models  TEXT NOT NULL DEFAULT '[]',
    registered_at  BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL
);

CREATE TABLE campaigns (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL,
    model         TEXT NOT NULL REFERENCES models (name),
    -- sha256 of the canonical spec: submitting the same spec again finds this row.
    spec_hash     TEXT NOT NULL UNIQUE,
    spec_toml     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    cancelled_at  BIGINT
);

-- state: waiting (for its synthesis job) -> queued -> leased -> succeeded | failed | cancelled;
-- a failed attempt or an expired lease goes back to queued until max_attempts.
CREATE TABLE jobs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id       BIGINT NOT NULL REFERENCES campaigns (id),
    content_key       TEXT NOT NULL,
    model             TEXT NOT NULL,
    layer             TEXT NOT NULL,
    filter            BIGINT NOT NULL,
    probe             TEXT NOT NULL,
    params            TEXT NOT NULL,
    seed              BIGINT NOT NULL,
    depends_on        BIGINT REFERENCES jobs (id),
    state             TEXT NOT NULL CHECK (state IN
                        ('waiting', 'queued', 'leased', 'succeeded', 'failed', 'cancelled')),
    -- The fencing token: bumped by every lease, required by every write of the lessee.
    attempt           BIGINT NOT NULL DEFAULT 0,
    max_attempts      BIGINT NOT NULL,
    not_before        BIGINT NOT NULL DEFAULT 0,
    worker_id         BIGINT REFERENCES workers (id),
    leased_at         BIGINT,
    lease_expires_at  BIGINT,
    progress          DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    finished_at       BIGINT,
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
    job_id       BIGINT NOT NULL REFERENCES jobs (id),
    attempt      BIGINT NOT NULL,
    worker_id    BIGINT,
    started_at   BIGINT,
    finished_at  BIGINT NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'expired')),
    error        TEXT,
    permanent    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (job_id, attempt)
);

-- One row per succeeded job (the primary key makes a second completion impossible).
CREATE TABLE results (
    job_id            BIGINT PRIMARY KEY REFERENCES jobs (id),
    attempt           BIGINT NOT NULL,
    max_act           DOUBLE PRECISION NOT NULL,
    mean_act          DOUBLE PRECISION NOT NULL,
    status            TEXT NOT NULL,
    derived           TEXT NOT NULL DEFAULT '{}',
    weights_sha256    TEXT NOT NULL,
    params            TEXT NOT NULL,
    params_hash       TEXT NOT NULL,
    seed              BIGINT NOT NULL,
    device            TEXT NOT NULL,
    library_versions  TEXT NOT NULL DEFAULT '{}',
    worker            TEXT NOT NULL,
    duration_ms       BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);

CREATE TABLE tuning_points (
    job_id    BIGINT NOT NULL REFERENCES jobs (id),
    position  BIGINT NOT NULL,
    probe     TEXT NOT NULL,
    x         DOUBLE PRECISION NOT NULL,
    label     TEXT,
    max_act   DOUBLE PRECISION NOT NULL,
    mean_act  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, position)
);

CREATE TABLE artifacts (
    job_id   BIGINT NOT NULL REFERENCES jobs (id),
    attempt  BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    uri      TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    bytes    BIGINT NOT NULL,
    PRIMARY KEY (job_id, kind)
);
