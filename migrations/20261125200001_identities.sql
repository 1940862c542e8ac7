-- Who a request belongs to, for project scoping. The project owning the image is
-- `image_owner`: set when the request is filed by a caller acting for projects (the broker
-- checks Glance's `owner` then), else by validation. `on_behalf_of` is the end user a
-- service's key filed it for (`X-On-Behalf-Of`).
alter table share_requests add column on_behalf_of text;

create index share_requests_image_owner_idx on share_requests (image_owner);
