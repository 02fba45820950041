-- Confirmed outcomes (chargebacks, analyst verdicts) of stored transactions.
-- Append-only: a correction is a new row, never an edit, so that a training
-- run can always see what was known at any moment. There is no foreign key to
-- transactions (it would forbid truncating that table); the gateway checks
-- that the transaction is stored before it inserts.
CREATE TABLE IF NOT EXISTS transaction_outcomes (
    id              BIGSERIAL PRIMARY KEY,
    outcome_id      VARCHAR(64)  NOT NULL,
    transaction_id  VARCHAR(64)  NOT NULL,
    outcome         VARCHAR(10)  NOT NULL
                    CHECK (outcome IN ('fraud', 'legitimate')),
    source          VARCHAR(32)  NOT NULL,
    reported_at     TIMESTAMPTZ  NOT NULL,
    payload_sha256  CHAR(64)     NOT NULL,
    recorded_at     TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT transaction_outcomes_outcome_id_key UNIQUE (outcome_id)
);

CREATE INDEX IF NOT EXISTS transaction_outcomes_transaction_id_idx
    ON transaction_outcomes (transaction_id, reported_at);

CREATE OR REPLACE FUNCTION transaction_outcomes_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction_outcomes is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

DROP TRIGGER IF EXISTS transaction_outcomes_no_change ON transaction_outcomes;
CREATE TRIGGER transaction_outcomes_no_change
    BEFORE UPDATE OR DELETE ON transaction_outcomes
    FOR EACH ROW EXECUTE FUNCTION transaction_outcomes_append_only();
