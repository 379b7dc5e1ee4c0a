-- wrk script: the token from $MNEMON_TOKEN on every request.
local token = os.getenv("MNEMON_TOKEN")
wrk.headers["Authorization"] = "Bearer " .. token
