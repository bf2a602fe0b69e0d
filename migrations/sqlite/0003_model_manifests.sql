-- Exported models (vephys-export) carry a manifest: how workers run their TorchScript archive.
-- Empty for the built-in models.
ALTER TABLE models ADD COLUMN manifest TEXT NOT NULL DEFAULT '';
