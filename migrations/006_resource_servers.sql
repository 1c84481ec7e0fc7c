-- Resource servers (RFC 8707 resource indicators): the APIs agents call. Access tokens requested
-- for one are bound to it (its identifier is their audience) and carry only its scopes.
CREATE TABLE resource_servers (
  identifier          text PRIMARY KEY,
  scopes              text[] NOT NULL,
  token_format        text NOT NULL DEFAULT 'opaque' CHECK (token_format IN ('opaque', 'jwt')),
  access_token_ttl    int NOT NULL CHECK (access_token_ttl BETWEEN 30 AND 86400),
  -- The client the resource server authenticates as (private_key_jwt) to introspect its tokens.
  introspector_client text,
  -- Where it wants revocation events pushed (RFC 8935) for grants that include it.
  event_delivery_uri  text,
  created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resource_servers_introspector_idx ON resource_servers (introspector_client) WHERE introspector_client IS NOT NULL;
