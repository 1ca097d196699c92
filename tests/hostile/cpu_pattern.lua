-- expect: cpu
-- Backtracking inside one C call: stopped by the runner's backstop (RLIMIT_CPU).
print(string.find(("a"):rep(1e5), ".-.-.-.-b"))
