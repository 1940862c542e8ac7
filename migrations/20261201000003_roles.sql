-- `gsb_app`: the privileges the running broker needs, and no more. Run migrations as the
-- tables' owner; run `serve` and `worker` as a login role that is a member of `gsb_app`
-- (`create role broker login password '...' in role gsb_app`). Such a role may read and
-- write the broker's tables but only SELECT and INSERT on the audit events (sealing goes
-- through `audit_seal`) and only SELECT on the checkpoints (`audit_checkpoint` writes
-- them). It cannot UPDATE, DELETE or TRUNCATE the audit tables even with the triggers
-- disabled, since it cannot disable them either: only an owner or a superuser can.
--
-- Roles belong to the whole server. The role is created when absent; a migrating role that
-- may not create roles leaves that to an administrator (a notice says so), and the grants
-- below are made once the role exists (migrate again).
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'gsb_app') then
        begin
            create role gsb_app nologin;
        exception
            -- Another database's migration created it at the same moment.
            when duplicate_object or unique_violation then null;
            when insufficient_privilege then
                raise notice 'cannot create role gsb_app: create it (nologin) and migrate again to grant it';
        end;
    end if;
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        execute format('grant connect on database %I to gsb_app', current_database());
        grant usage on schema public to gsb_app;
        grant select, insert, update, delete on all tables in schema public to gsb_app;
        revoke insert, update, delete on _sqlx_migrations from gsb_app;
        revoke insert, update, delete, truncate on audit_checkpoints from gsb_app;
        revoke update, delete, truncate on audit_events from gsb_app;
        grant usage on sequence audit_events_seq to gsb_app;
        grant execute on function audit_seal(integer) to gsb_app;
        grant execute on function audit_checkpoint(text) to gsb_app;
        -- Tables later migrations create (as this same role) are granted alike; an
        -- append-only one must revoke what it refuses, as above.
        alter default privileges in schema public grant select, insert, update, delete on tables to gsb_app;
    end if;
end;
$$;

-- No role makes temporary tables here unless an administrator grants it: the broker needs
-- none, and a temporary table is how a caller's objects get in front of the real ones. A
-- migrating role that does not own the database cannot revoke this (Postgres warns and goes
-- on); a notice then says what to run.
do $$
begin
    execute format('revoke temporary on database %I from public', current_database());
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        execute format('revoke temporary on database %I from gsb_app', current_database());
        if has_database_privilege('gsb_app', current_database(), 'temporary') then
            raise notice 'gsb_app can still create temporary tables: as the database owner, run: revoke temporary on database % from public', current_database();
        end if;
    end if;
end;
$$;
