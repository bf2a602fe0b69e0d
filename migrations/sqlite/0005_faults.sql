-- Surviving the cluster (issue 13); see the Postgres migration for what each change is for.
ALTER TABLE jobs ADD COLUMN lease_request TEXT;
CREATE INDEX jobs_lease_request ON jobs (worker_id, lease_request) WHERE state = 'leased';

ALTER TABLE campaigns ADD COLUMN weights_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN weights_uri TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
UPDATE campaigns SET
    weights_sha256 = COALESCE((SELECT m.weights_sha256 FROM models m WHERE m.name = campaigns.model), ''),
    weights_uri = COALESCE((SELECT m.weights_uri FROM models m WHERE m.name = campaigns.model), ''),
    manifest = COALESCE((SELECT m.manifest FROM models m WHERE m.name = campaigns.model), '');

ALTER TABLE attempts ADD COLUMN released INTEGER NOT NULL DEFAULT 0;

ALTER TABLE workers ADD COLUMN held TEXT NOT NULL DEFAULT '[]';
