-- The projects a request named when it was filed, as rows in chain order (issue 15).
--
-- An event's `details.targets` lists the targets as filed (names or ids). A project's page
-- of the log (db::audit::read, the fourth of a project's sides) found those events through
-- a GIN index, which gives no order: every event naming the project was read (some 600 in
-- a cloud of ten million events) to find the first 50 after the cursor, and read from disk
-- that was 24 ms at p99 (docs/benchmarks.md, "History at scale"). Here each named project
-- is a row with the event's place and time, in a B-tree by project and place: the page reads
-- the first 50 entries after the cursor and then only those events.
--
-- Written when an event is sealed (it has no place before): by a trigger on the update
-- that seals it, as the table's owner (`audit_seal` runs as the owner), so `gsb_app` reads
-- the table and writes nothing to it. An index of the log, not part of it: the chain covers
-- the events, and a row here only says where to look (the page reads the event itself,
-- with every condition). `audit archive` removes the rows of the events it archives.
create table audit_event_targets (
    project      text not null,
    chain_pos    bigint not null,
    occurred_at  timestamptz not null,
    primary key (project, chain_pos)
);

create function audit_event_targets_add() returns trigger
language plpgsql security definer set search_path = pg_catalog, public, pg_temp as $$
begin
    insert into public.audit_event_targets (project, chain_pos, occurred_at)
    select distinct named.value #>> '{}', new.chain_pos, new.occurred_at
    from pg_catalog.jsonb_array_elements(new.details -> 'targets') named
    where pg_catalog.jsonb_typeof(named.value) = 'string'
    on conflict do nothing;
    return null;
end;
$$;

revoke all on function audit_event_targets_add() from public;

-- Cloned by Postgres to every partition, present and future.
create trigger audit_events_targets_on_seal
    after update of chain_pos on audit_events
    for each row
    when (old.chain_pos is null and new.chain_pos is not null
          and pg_catalog.jsonb_typeof(new.details -> 'targets') = 'array')
    execute function audit_event_targets_add();

-- The events sealed before this migration.
insert into audit_event_targets (project, chain_pos, occurred_at)
select distinct named.value #>> '{}', e.chain_pos, e.occurred_at
from audit_events e
cross join lateral jsonb_array_elements(e.details -> 'targets') named
where e.chain_pos is not null
  and jsonb_typeof(e.details -> 'targets') = 'array'
  and jsonb_typeof(named.value) = 'string'
on conflict do nothing;

drop index if exists audit_events_targets_idx;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        revoke insert, update, delete, truncate, references, trigger on audit_event_targets from gsb_app;
        grant select on audit_event_targets to gsb_app;
    end if;
end;
$$;
