-- The browser console's sessions (src/http/console). The cookie holds a random secret;
-- this table holds only its SHA-256 (the row's key) and the caller's credential (a Keystone
-- token or an API key) sealed with XChaCha20-Poly1305 under a key derived from that same
-- secret: neither the table alone nor the cookie alone yields the credential. Every replica
-- reads the same rows, so a session is valid on all of them. A row ends at sign-out, at
-- its `expires_at` (the Keystone token's expiry, or a fixed lifetime for an API key), or
-- when the API refuses the credential it holds.
create table console_sessions (
    id_hash bytea primary key check (octet_length(id_hash) = 32),
    kind text not null check (kind in ('keystone', 'api_key')),
    sealed_credential bytea not null,
    nonce bytea not null check (octet_length(nonce) = 24),
    -- Who signed in (the principal's name), for operators listing sessions; not a secret.
    principal text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null
);

create index console_sessions_expires_at on console_sessions (expires_at);
