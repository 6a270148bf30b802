-- wrk script for the "both tenants" scenarios.
--   wrk ... -s mixed-hosts.lua URL -- PATH request     alternate the Host header
--       between a.test and b.test on every request, so each keep-alive
--       connection carries both tenants (a tenant switch mid-connection);
--   wrk -t2 ... -s mixed-hosts.lua URL -- PATH connection   every thread (and
--       so every connection of it) sticks to one tenant: thread 1 a.test,
--       thread 2 b.test, ... (the way browsers use connections: one origin each).
-- Each wrk thread has its own Lua state, hence its own counter.
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tenant", (n % 2 == 1) and "a.test" or "b.test")
end

local reqs, i, mode = nil, 0, "request"

function init(args)
  local path = args[1] or "/index.html"
  mode = args[2] or "request"
  if mode == "connection" then
    reqs = { wrk.format("GET", path, { ["Host"] = tenant }) }
  else
    reqs = {
      wrk.format("GET", path, { ["Host"] = "a.test" }),
      wrk.format("GET", path, { ["Host"] = "b.test" }),
    }
  end
end

function request()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
