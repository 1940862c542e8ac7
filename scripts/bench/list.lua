-- wrk script for the GET list endpoints of benchmark 1: prints the summary of summary.lua.
-- GSB_BENCH_KEY: any API key.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "summary.lua")

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("GSB_BENCH_KEY")
end
