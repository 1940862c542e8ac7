-- Claims take the first due job of an image (db::jobs::claim), so that workers claiming at
-- the same moment go to different images instead of locking one image's next jobs and
-- leaving them out of the winner's batch. This index answers "is there an earlier due job
-- on this image?" for each candidate.
create index jobs_queued_image_idx on jobs (image_id, run_at, id) where state = 'queued';
