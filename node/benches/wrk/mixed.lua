-- wrk script: the mixed load. Of every 10 requests, 4 add a unique note, 4 get a memory by
-- id (from $MNEMON_IDS, a file of ids, one a line) and 2 run a hybrid search. Each
-- acknowledged add's id (a 201's body) is appended to $MNEMON_ACKED.<thread>, so the
-- caller can check that none was lost.
local token = os.getenv("MNEMON_TOKEN")
local words = {"garden","invoice","kettle","meeting","rust","paper","trip","doctor","budget","recipe","bicycle","lecture"}
local threads = {}
local counter = 0

setup = function(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local ids = {}
local acked
local n = 0
local headers

init = function(args)
  for line in io.lines(os.getenv("MNEMON_IDS")) do
    ids[#ids + 1] = line
  end
  acked = io.open(os.getenv("MNEMON_ACKED") .. "." .. tid, "w")
  headers = {["Authorization"] = "Bearer " .. token}
  math.randomseed(tid * 7919 + os.time())
end

request = function()
  n = n + 1
  local r = n % 10
  if r < 4 then
    local a = words[math.random(#words)]
    local b = words[math.random(#words)]
    local body = string.format('{"content":"mixed %d %d %d about the %s and the %s"}', tid, n, math.random(1, 1000000000), a, b)
    return wrk.format("POST", "/api/v1/memories", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
  elseif r < 8 then
    return wrk.format("GET", "/api/v1/memories/" .. ids[math.random(#ids)], headers)
  else
    local q = words[math.random(#words)] .. "+" .. words[math.random(#words)]
    return wrk.format("GET", "/api/v1/search?q=" .. q, headers)
  end
end

response = function(status, hdrs, body)
  if status == 201 then
    local id = string.match(body, '"id":"(%w+)"')
    if id then
      acked:write(id, "\n")
      acked:flush()
    end
  end
end
