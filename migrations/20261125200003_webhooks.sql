-- Webhooks: endpoints admins register, and the deliveries queued for them. A delivery is
-- queued in the same transaction as the audit event it announces, and is its own small job
-- (claimed under a lease, retried with backoff) outside the share jobs: a slow or failing
-- receiver never holds an image or a worker slot a share needs.
create table webhooks (
    id           uuid primary key,
    url          text not null,
    -- Events it wants; empty means every event.
    events       text[] not null default '{}',
    description  text,
    -- Signs each delivery (HMAC-SHA256). Shown once, at creation; never returned or logged.
    secret       text not null,
    active       boolean not null default true,
    created_by   text not null,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

create table webhook_deliveries (
    id                uuid primary key,
    webhook_id        uuid not null references webhooks (id) on delete cascade,
    event             text not null,
    -- The audit event announced, and the place of this event among those it announces:
    -- deliveries to one endpoint go out in this order.
    audit_seq         bigint not null,
    position          smallint not null default 0,
    payload           jsonb not null,
    state             text not null default 'queued'
                        check (state in ('queued', 'running', 'delivered', 'failed')),
    run_at            timestamptz not null default now(),
    attempts          integer not null default 0,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    -- The receiver's last HTTP status, or why there was none.
    last_status       smallint,
    last_error        text,
    created_at        timestamptz not null default now(),
    delivered_at      timestamptz
);

create index webhook_deliveries_due_idx on webhook_deliveries (run_at) where state in ('queued', 'running');
create index webhook_deliveries_order_idx on webhook_deliveries (webhook_id, audit_seq, position);
