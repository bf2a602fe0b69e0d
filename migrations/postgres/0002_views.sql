-- Views for the questions a scientist asks; docs/coordinator.md shows queries against them.
-- The SQLite migration defines the same views with the same columns.

-- Every finished job with its numbers and provenance.
CREATE VIEW job_results AS
SELECT j.campaign_id, j.id AS job_id, j.model, j.layer, j.filter, j.probe, r.attempt,
       r.max_act, r.mean_act, r.status, r.derived, r.weights_sha256, r.params_hash, r.seed,
       r.device, r.worker, r.duration_ms
FROM jobs j
JOIN results r ON r.job_id = j.id;

-- One row per stimulus: the tuning curves, ready to plot.
CREATE VIEW tuning_curves AS
SELECT j.campaign_id, j.model, j.layer, j.filter, tp.probe, tp.x, tp.label, tp.max_act,
       tp.mean_act, tp.position, j.id AS job_id
FROM tuning_points tp
JOIN jobs j ON j.id = tp.job_id;

-- The stimulus with the highest max activity of each job (ties: the first stimulus).
CREATE VIEW tuning_peaks AS
SELECT job_id, probe, x AS peak_x, label AS peak_label, max_act AS peak_max_act
FROM (
    SELECT tp.*, ROW_NUMBER() OVER (PARTITION BY tp.job_id ORDER BY tp.max_act DESC, tp.position)
           AS peak_rank
    FROM tuning_points tp
) ranked
WHERE peak_rank = 1;

-- One row per unit (campaign, layer, filter): max-image activity, preferred rotation and zoom
-- (the stimulus value with the highest max activity) and colour selectivity (the colour job's
-- derived "csi"). NULL where that probe has not finished.
CREATE VIEW unit_summary AS
SELECT j.campaign_id, j.model, j.layer, j.filter,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.max_act END)   AS max_image_max_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.mean_act END)  AS max_image_mean_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.status END)    AS synthesis_status,
       MAX(CASE WHEN j.probe = 'rotation' THEN p.peak_x END)     AS preferred_rotation,
       MAX(CASE WHEN j.probe = 'zoom' THEN p.peak_x END)         AS preferred_zoom,
       MAX(CASE WHEN j.probe = 'hue' THEN p.peak_x END)          AS preferred_hue,
       MAX(CASE WHEN j.probe = 'color'
                THEN CAST(r.derived::jsonb ->> 'csi' AS DOUBLE PRECISION) END)
                                                                 AS color_selectivity,
       COUNT(*) FILTER (WHERE j.state = 'failed')                AS failed_jobs
FROM jobs j
LEFT JOIN results r ON r.job_id = j.id
LEFT JOIN tuning_peaks p ON p.job_id = j.id
GROUP BY j.campaign_id, j.model, j.layer, j.filter;

-- Job counts per campaign, layer, probe and state.
CREATE VIEW campaign_progress AS
SELECT campaign_id, layer, probe, state, COUNT(*) AS jobs
FROM jobs
GROUP BY campaign_id, layer, probe, state;

-- Every failed attempt with its error, newest first per job.
CREATE VIEW job_errors AS
SELECT j.campaign_id, j.id AS job_id, j.layer, j.filter, j.probe, a.attempt, a.outcome,
       a.permanent, a.error, a.worker_id, a.finished_at
FROM attempts a
JOIN jobs j ON j.id = a.job_id
WHERE a.outcome <> 'succeeded';
