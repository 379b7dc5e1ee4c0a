-- wrk script: one unique note per request, POSTed to /api/v1/memories with the token from $MNEMON_TOKEN.
local token = os.getenv("MNEMON_TOKEN")
local n = 0
local words = {"garden","invoice","kettle","meeting","rust","paper","trip","doctor","budget","recipe","bicycle","lecture"}
request = function()
  n = n + 1
  local a = words[(n % #words) + 1]
  local b = words[((n * 7) % #words) + 1]
  local body = string.format('{"content":"note %d %d about the %s and the %s, written by wrk to measure adds"}', math.random(1, 1000000000), n, a, b)
  return wrk.format("POST", "/api/v1/memories", {["Content-Type"]="application/json", ["Authorization"]="Bearer " .. token}, body)
end
