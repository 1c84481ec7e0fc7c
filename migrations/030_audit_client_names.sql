-- Exports name the agent as it was called when each event happened: the latest
-- client.registered / client.updated row (which record client_name) at or before the event.
-- This partial index makes that lookup one short backward scan however many tokens a client has.
CREATE INDEX audit_events_client_names_idx ON audit_events (client_id, id)
  WHERE event_type IN ('client.registered', 'client.updated');
