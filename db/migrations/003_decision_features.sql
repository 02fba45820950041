-- The feature row each decision was made from, and its schema, so that what a
-- model saw online can be compared exactly with what training computes
-- offline. float32 like the models' input; a model on a narrower schema saw
-- the first columns of it (features.schemas). NULL for rows stored before.
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS features real[];
ALTER TABLE transactions ADD COLUMN IF NOT EXISTS feature_schema TEXT;
