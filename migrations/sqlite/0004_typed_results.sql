-- The job contract is typed (proto/src/params.rs, proto/src/derived.rs): unit_summary shows
-- each headline number of the derived documents as a column, the same columns as on Postgres
-- (where the documents are jsonb; here they stay TEXT and json_extract reads them).
DROP VIEW unit_summary;

-- One row per unit (campaign, layer, filter); NULL where the probe has not finished. See the
-- Postgres migration for what each column is (docs/science.md defines the numbers).
CREATE VIEW unit_summary AS
SELECT j.campaign_id, j.model, j.layer, j.filter,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.max_act END)   AS max_image_max_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.mean_act END)  AS max_image_mean_act,
       MAX(CASE WHEN j.probe = 'synthesis' THEN r.status END)    AS synthesis_status,
       MAX(CASE WHEN j.probe = 'rotation' THEN p.peak_x END)     AS preferred_rotation,
       MAX(CASE WHEN j.probe = 'zoom' THEN p.peak_x END)         AS preferred_zoom,
       MAX(CASE WHEN j.probe = 'hue' THEN p.peak_x END)          AS preferred_hue,
       MAX(CASE WHEN j.probe = 'baseline'
                THEN CAST(json_extract(r.derived, '$.csi') AS REAL) END) AS color_selectivity,
       MAX(CASE WHEN j.probe = 'color'
                THEN CAST(json_extract(r.derived, '$.preferred_channel_selectivity') AS REAL) END)
                                                                 AS channel_selectivity,
       MAX(CASE WHEN j.probe = 'color' THEN json_extract(r.derived, '$.preferred_channel') END)
                                                                 AS preferred_channel,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN CAST(json_extract(r.derived, '$.circular_variance') AS REAL) END)
                                                                 AS rotation_circular_variance,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN CAST(json_extract(r.derived, '$.symmetry_period_deg') AS REAL) END)
                                                                 AS symmetry_period_deg,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN CAST(json_extract(r.derived, '$.symmetry_strength') AS REAL) END)
                                                                 AS symmetry_strength,
       MAX(CASE WHEN j.probe = 'rotation'
                THEN CAST(json_extract(r.derived, '$.bandwidth') AS REAL) END)
                                                                 AS rotation_bandwidth_deg,
       MAX(CASE WHEN j.probe = 'zoom'
                THEN CAST(json_extract(r.derived, '$.bandwidth') AS REAL) END)
                                                                 AS zoom_bandwidth_octaves,
       MAX(CASE WHEN j.probe = 'hue'
                THEN CAST(json_extract(r.derived, '$.bandwidth') AS REAL) END) AS hue_bandwidth_deg,
       MAX(CASE WHEN j.probe = 'grating'
                THEN CAST(json_extract(r.derived, '$.orientation.preferred') AS REAL) END)
                                                                 AS grating_orientation_deg,
       MAX(CASE WHEN j.probe = 'grating'
                THEN CAST(json_extract(r.derived, '$.frequency.preferred') AS REAL) END)
                                                                 AS grating_frequency,
       SUM(CASE WHEN j.state = 'failed' THEN 1 ELSE 0 END)       AS failed_jobs
FROM jobs j
LEFT JOIN results r ON r.job_id = j.id
LEFT JOIN tuning_peaks p ON p.job_id = j.id
GROUP BY j.campaign_id, j.model, j.layer, j.filter;
