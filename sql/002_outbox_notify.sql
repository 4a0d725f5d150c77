-- Wake the outbox relay as soon as rows commit (NOTIFY is delivered at commit, once per transaction
-- and channel), so it need not poll often. Statement level: one notification per insert statement.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
