-- Clients identified by the https URL of their Client ID Metadata Document: the row records them
-- (grants, the consent and account pages, admin disable) while the document stays the source of
-- their metadata.
ALTER TABLE clients DROP CONSTRAINT clients_registration_check;
ALTER TABLE clients ADD CONSTRAINT clients_registration_check
  CHECK (registration IN ('admin', 'token', 'open', 'metadata_document'));
