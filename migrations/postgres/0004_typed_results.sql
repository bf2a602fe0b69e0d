-- The job contract is typed (proto/src/params.rs, proto/src/derived.rs): JSON documents are
-- jsonb, so the derived numbers are as easy to query as the curves, and unit_summary shows each
-- headline number as a column. Views that read the documents are dropped and made again
-- around the type change.
DROP VIEW unit_summary;
DROP VIEW job_results;

ALTER TABLE jobs ALTER COLUMN params TYPE jsonb USING params::jsonb;
ALTER TABLE results ALTER COLUMN derived DROP DEFAULT;
ALTER TABLE results ALTER COLUMN derived TYPE jsonb USING derived::jsonb;
ALTER TABLE results ALTER COLUMN derived SET DEFAULT '{}'::jsonb;
ALTER TABLE results ALTER COLUMN params TYPE jsonb USING params::jsonb;
ALTER TABLE results ALTER COLUMN library_versions DROP DEFAULT;
ALTER TABLE results ALTER COLUMN library_versions TYPE jsonb USING library_versions::jsonb;
ALTER TABLE results ALTER COLUMN library_versions SET DEFAULT '{}'::jsonb;

-- Every finished job with its numbers and provenance.
CREATE VIEW job_results AS
SELECT j.campaign_id, j.id AS job_id, j.model, j.layer, j.filter, j.probe, r.attempt,
       r.max_act, r.mean_act, r.status, r.derived, r.weights_sha256, r.params_hash, r.seed,
       r.device, r.worker, r.duration_ms
FROM jobs j
JOIN results r ON r.job_id = j.id;

-- One row per unit (campaign, layer, filter); NULL where the probe has not finished. Numbers
-- come from the max-activity responses (docs/science.md):
-- - max_image_*: the max image's activity; synthesis_status ok or dead_unit;
-- - preferred_*: the stimulus value with the highest max activity;
-- - color_selectivity: the paper's index, full-colour max image against its grayscale
--   (baseline); channel_selectivity: the colour probe's preferred single-colour image against
--   the same values in all three channels (no luma bias), and preferred_channel;
-- - rotation: orientation circular variance over 2 theta, symmetry period and its strength,
--   bandwidth; zoom and hue bandwidths; grating preferred orientation and frequency.
CREATE VIEW unit_summary AS
SELECT j.campaign_id, j.model, j.layer, j.filter,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.max_act END)   AS max_image_max_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.mean_act END)  AS max_image_mean_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.status END)    AS synthesis_status,
       MAX(CASE WHEN j.probe = 'rotation' THEN p.peak_x END)     AS preferred_rotation,
       MAX(CASE WHEN j.probe = 'zoom' THEN p.peak_x END)         AS preferred_zoom,
       MAX(CASE WHEN j.probe = 'hue' THEN p.peak_x END)          AS preferred_hue,
       MAX(CASE WHEN j.probe = 'baseline'
                THEN (r.derived ->> 'csi')::double precision END) AS color_selectivity,
       MAX(CASE WHEN j.probe = 'color'
                THEN (r.derived ->> 'preferred_channel_selectivity')::double precision END)
                                                                 AS channel_selectivity,
       MAX(CASE WHEN j.probe = 'color' THEN r.derived ->> 'preferred_channel' END)
                                                                 AS preferred_channel,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN (r.derived ->> 'circular_variance')::double precision END)
                                                                 AS rotation_circular_variance,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN (r.derived ->> 'symmetry_period_deg')::double precision END)
                                                                 AS symmetry_period_deg,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN (r.derived ->> 'symmetry_strength')::double precision END)
                                                                 AS symmetry_strength,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN (r.derived ->> 'bandwidth')::double precision END) AS rotation_bandwidth_deg,
       MAX(CASE WHEN j.probe = 'zoom'
                THEN (r.derived ->> 'bandwidth')::double precision END) AS zoom_bandwidth_octaves,
       MAX(CASE WHEN j.probe = 'hue'
                THEN (r.derived ->> 'bandwidth')::double precision END) AS hue_bandwidth_deg,
       MAX(CASE WHEN j.probe = 'grating'
                THEN (r.derived -> 'orientation' ->> 'preferred')::double precision END)
                                                                 AS grating_orientation_deg,
       MAX(CASE WHEN j.probe = 'grating'
                THEN (r.derived -> 'frequency' ->> 'preferred')::double precision END)
                                                                 AS grating_frequency,
       COUNT(*) FILTER (WHERE j.state = 'failed')                AS failed_jobs
FROM jobs j
LEFT JOIN results r ON r.job_id = j.id
LEFT JOIN tuning_peaks p ON p.job_id = j.id
GROUP BY j.campaign_id, j.model, j.layer, j.filter;
