-- expect: cpu
while true do string.gsub(("x"):rep(1000), ".", function(c) return c .. c end) end
