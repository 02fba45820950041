-- Every decision the gateway acknowledged, for audit. One row per transaction_id:
-- the unique key is the final word on idempotency.
CREATE TABLE IF NOT EXISTS transactions (
    id                BIGSERIAL PRIMARY KEY,
    transaction_id    VARCHAR(64)      NOT NULL,
    user_id           VARCHAR(64)      NOT NULL,
    payload           JSONB            NOT NULL,
    payload_sha256    CHAR(64)         NOT NULL,
    amount            NUMERIC(14, 2)   NOT NULL CHECK (amount > 0),
    currency          CHAR(3)          NOT NULL,
    anomaly_score     DOUBLE PRECISION CHECK (anomaly_score BETWEEN 0 AND 1),
    risk_probability  DOUBLE PRECISION CHECK (risk_probability BETWEEN 0 AND 1),
    combined_score    DOUBLE PRECISION,
    decision          VARCHAR(8)       NOT NULL
                      CHECK (decision IN ('APPROVE', 'FLAG', 'REVIEW')),
    model_versions    JSONB            NOT NULL,
    policy_version    TEXT             NOT NULL,
    degraded          BOOLEAN          NOT NULL DEFAULT FALSE,
    response          JSONB            NOT NULL,
    created_at        TIMESTAMPTZ      NOT NULL DEFAULT now(),
    CONSTRAINT transactions_transaction_id_key UNIQUE (transaction_id),
    -- A degraded decision has no scores and is never an approval.
    CONSTRAINT transactions_degraded_not_approved
        CHECK (NOT degraded OR decision <> 'APPROVE')
);

CREATE INDEX IF NOT EXISTS transactions_created_at_idx ON transactions (created_at);
CREATE INDEX IF NOT EXISTS transactions_decision_idx ON transactions (decision);
CREATE INDEX IF NOT EXISTS transactions_risk_probability_idx ON transactions (risk_probability);

CREATE OR REPLACE VIEW high_risk_transactions AS
SELECT transaction_id, user_id, amount, currency, anomaly_score, risk_probability,
       combined_score, decision, degraded, model_versions, policy_version,
       created_at
FROM transactions
WHERE decision IN ('FLAG', 'REVIEW');
