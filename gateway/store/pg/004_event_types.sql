-- Event types of the Svix-compatible API (gateway/api/svix/event_types.rs): the JSON of
-- model::EventTypeRecord by name, like endpoints and tenants.
CREATE TABLE event_types (id text PRIMARY KEY, record bytea NOT NULL);
