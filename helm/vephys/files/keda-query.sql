SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND not_before <= (EXTRACT(EPOCH FROM now()) * 1000)::bigint
