-- wrk script for benchmark 1 (intake): POST /v1/share-requests, each with a new image id and
-- target, so that no two requests ask for the same grant (which would be a 409).
-- GSB_BENCH_KEY: a requester's API key.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")

local key = os.getenv("GSB_BENCH_KEY")
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + seed * 7919)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end

local function hex(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

function request()
  local image = hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-a" .. hex(3) .. "-" .. hex(12)
  local body = '{"image_id":"' .. image .. '","targets":["' .. hex(32) .. '"],"reason":"bench intake"}'
  return wrk.format(nil, nil, nil, body)
end
