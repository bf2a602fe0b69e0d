-- Surviving the cluster (issue 13).
--
-- Idempotent leases: a claim records the worker's request id on the jobs it takes, so a retried
-- Lease finds them instead of taking more.
ALTER TABLE jobs ADD COLUMN lease_request TEXT;
CREATE INDEX jobs_lease_request ON jobs (worker_id, lease_request) WHERE state = 'leased';

-- A campaign pins the weights (and an exported model's manifest) its model had when it was
-- submitted: its leases name them and a result computed with other weights is refused.
-- Campaigns submitted before take what the registry holds now.
ALTER TABLE campaigns ADD COLUMN weights_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN weights_uri TEXT NOT NULL DEFAULT '';
ALTER TABLE campaigns ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
UPDATE campaigns SET weights_sha256 = m.weights_sha256, weights_uri = m.weights_uri,
                     manifest = m.manifest
FROM models m WHERE m.name = campaigns.model;

-- An attempt given back by its worker (told to stop, or its store or weights source failing):
-- it does not count against max_attempts.
ALTER TABLE attempts ADD COLUMN released BOOLEAN NOT NULL DEFAULT FALSE;

-- What each worker holds: [{"model": ..., "weights_sha256": ...}]. Workers add models the
-- registry does not know, but never change a registered one.
ALTER TABLE workers ADD COLUMN held TEXT NOT NULL DEFAULT '[]';
