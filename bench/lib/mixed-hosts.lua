-- wrk script: alternate the Host header between the two tenants' vhosts on
-- every request (so one keep-alive connection carries both tenants).
-- Each wrk thread has its own Lua state, hence its own counter.
local reqs = nil
local i = 0

init = function(args)
  local path = args[1] or "/index.html"
  reqs = {
    wrk.format("GET", path, { ["Host"] = "a.test" }),
    wrk.format("GET", path, { ["Host"] = "b.test" }),
  }
end

request = function()
  i = i + 1
  return reqs[(i % 2) + 1]
end
