-- unframe.lua: read before accept.lua for a producer's spool (bus/spool/sender.py), whose events come
-- each as its frame's payload in one argument ('<id>\n<tag>\n<route>\n<received>\n<body>',
-- bus/spool/frames.py): it splits them into the ARGV and KEYS accept.lua reads, as locals of the same
-- names. One argument an event instead of six and a key (the sender's Python packed each of them:
-- most of its CPU, taken from the emitting threads under the GIL; docs/performance.md, issue 21).
-- A payload that does not split so, or names another route, refuses the whole call before anything
-- is written (BUSFRAME); the spool keeps it and the sender tries again.
--
-- KEYS[1..6] as accept.lua's   KEYS[7] its idempotency placeholder   KEYS[8] the spool's mark hash
-- KEYS[9] the template key
-- ARGV[1..12] as accept.lua's  ARGV[13..12 + n] the payloads         ARGV[13 + n..12 + 2n] their places
local framed_argv, framed_keys = ARGV, KEYS
local ARGV, KEYS = {}, {}
do
  local n, route, find, sub = tonumber(framed_argv[1]), framed_argv[2], string.find, string.sub
  for i = 1, 12 do ARGV[i] = framed_argv[i] end
  for i = 1, 6 do KEYS[i] = framed_keys[i] end
  local a = 13
  for e = 1, n do
    local payload = framed_argv[12 + e]
    local p1 = find(payload, '\n', 1, true)
    local p2 = p1 and find(payload, '\n', p1 + 1, true)
    local p3 = p2 and find(payload, '\n', p2 + 1, true)
    local p4 = p3 and find(payload, '\n', p3 + 1, true)
    if not p4 or p1 == 1 or p2 == p1 + 1 or sub(payload, p2 + 1, p3 - 1) ~= route
        or not tonumber(sub(payload, p3 + 1, p4 - 1)) then
      return redis.error_reply('BUSFRAME event ' .. e .. ' of this call is not a spool frame of route ' .. route
                               .. ': its payload must be id, tag, route and received time on lines of their own, then the body')
    end
    local id = sub(payload, 1, p1 - 1)
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4] =
      id, sub(payload, p1 + 1, p2 - 1), sub(payload, p4 + 1), '', sub(payload, p3 + 1, p4 - 1)
    KEYS[6 + e] = EVENT_KEY .. id
    a = a + 5
  end
  for e = 1, n do ARGV[a + e - 1] = framed_argv[12 + n + e] end
  KEYS[7 + n], KEYS[8 + n], KEYS[9 + n] = framed_keys[7], framed_keys[8], framed_keys[9]
end
