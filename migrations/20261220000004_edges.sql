-- One spelling per region, one live share per image, region and project whatever the
-- spelling, and indexes for the retention purge (db::retention).

-- Regions are stored trimmed (the API also checks them against the cloud's catalog). Rows
-- filed before that check may carry surrounding spaces: trim them, so that they meet the
-- constraints below and the indexes see them as the region they name.
drop index shares_one_live_grant_idx;
drop index shares_one_live_project_idx;
update share_requests set region = btrim(region) where region <> btrim(region);
update shares set region = btrim(region) where region <> btrim(region);

-- Two live shares that now name the same image, region and project would stop the unique
-- indexes below from being built: say which, so that an operator revokes or cancels one.
do $$
declare
    twins text;
begin
    select string_agg(format('image %s region %s project %s', image_id, region, who), '; ')
      into twins
      from (select image_id, lower(region) as region, coalesce(project_id, target) as who
              from shares where share_is_live(state)
             group by 1, 2, 3 having count(*) > 1) d;
    if twins is not null then
        raise exception 'two live shares of one image to one project (region spelled two ways): %. '
                        'Revoke or cancel one of each pair, then migrate again.', twins;
    end if;
end $$;

alter table share_requests add constraint share_requests_region_canonical
    check (region <> '' and region = btrim(region));
alter table shares add constraint shares_region_canonical
    check (region <> '' and region = btrim(region));

-- The same two indexes as before (db::share_requests::ONE_LIVE_GRANT names them), keyed on
-- the region without regard to case: Keystone region ids that differ only in case are one
-- region on the usual (case-insensitive) Keystone databases, and never two.
create unique index shares_one_live_grant_idx on shares (image_id, lower(region), target)
    where share_is_live(state);
create unique index shares_one_live_project_idx on shares (image_id, lower(region), project_id)
    where project_id is not null and share_is_live(state);

-- The retention purge deletes finished jobs and settled deliveries oldest first.
create index jobs_finished_idx on jobs (finished_at) where state in ('done', 'failed');
create index webhook_deliveries_settled_idx on webhook_deliveries (coalesce(delivered_at, run_at))
    where state in ('delivered', 'failed');
