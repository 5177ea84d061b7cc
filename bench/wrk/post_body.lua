-- SPDX-License-Identifier: Apache-2.0
-- post_body.lua - wrk script of the benchmark: POSTs a body to /v1/traces
-- with trace ids of its own in every request, and counts the answers by
-- status, so only the requests the daemon acknowledged (200) are counted as
-- accepted.
--
-- wrk ... -s bench/wrk/post_body.lua URL -- FILE [CONTENT_ENCODING [MODE]]
--
-- MODE says what FILE is and how each request differs from the others:
--   pb    (default) an OTLP protobuf body whose trace ids are the
--         placeholders of bench/gen_bodies.mjs (the 12 bytes
--         "o2l-bench-id" then the trace's index, 4 bytes); in every request
--         bytes 0..7 of each placeholder become the request's counter
--         (8 bytes, big-endian; the top 16 bits are the wrk thread), so
--         each request carries trace ids no other request has
--   json  the same for an OTLP/JSON body: the placeholder is 32 hex digits
--         starting 6f326c2d62656e63682d6964, the first 16 become the
--         counter in hex
--   pool  a pool file of bench/gen_bodies.mjs --pool (for each body its
--         length, 4 bytes big-endian, then its bytes), for bodies that
--         cannot be rewritten here (gzip): each request takes the next
--         body; past the end it starts over, and those requests are
--         counted as "reused" (they repeat trace ids already sent)
--   same  FILE as it is in every request (trace ids repeat)
-- Content-Type is application/json for json, application/x-protobuf
-- otherwise; CONTENT_ENCODING (e.g. gzip) is sent as Content-Encoding when
-- not empty (the body must already be encoded that way).
--
-- The requests are built once in init() and only the counters are put
-- in per request (one table.concat), to keep wrk's CPU cost low. At the end
-- one line is printed:
--   o2l-wrk {"requests":..,"status_200":..,"status_503":..,...}

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_tag", #threads)
end

local parts = nil  -- pb / json: the request cut at the counters
local slots = {}   -- the indexes in parts that take the counter
local pool = nil   -- pool: the formatted requests
local pool_next = 1
local counter = 0
local tag = 1
local hex = false

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local function be32(s, i)
    local a, b, c, d = string.byte(s, i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
end

function init(args)
    local path = args[1]
    if path == nil then
        error("post_body.lua: give the body file after --")
    end
    local enc = args[2]
    local mode = args[3]
    if mode == nil or mode == "" then
        mode = "pb"
    end
    tag = thread_tag or 1
    wrk.method = "POST"
    wrk.path = "/v1/traces"
    if mode == "json" then
        wrk.headers["Content-Type"] = "application/json"
    else
        wrk.headers["Content-Type"] = "application/x-protobuf"
    end
    if enc ~= nil and enc ~= "" then
        wrk.headers["Content-Encoding"] = enc
    end
    ok = 0
    unavailable = 0
    other = 0
    reused = 0
    sent = 0

    local data = read_file(path)
    if mode == "pool" then
        pool = {}
        local i = 1
        while i + 3 <= #data do
            local n = be32(data, i)
            local body = string.sub(data, i + 4, i + 3 + n)
            if #body ~= n then
                error("post_body.lua: " .. path .. " is cut short")
            end
            pool[#pool + 1] = wrk.format(nil, nil, nil, body)
            i = i + 4 + n
        end
        if #pool == 0 then
            error("post_body.lua: " .. path .. " holds no body")
        end
        return
    end
    if mode == "same" then
        wrk.body = data
        return
    end
    if mode ~= "pb" and mode ~= "json" then
        error("post_body.lua: unknown mode " .. mode)
    end
    hex = mode == "json"
    local marker = hex and "6f326c2d62656e63682d6964" or "o2l-bench-id"
    local width = hex and 16 or 8
    local req = wrk.format(nil, nil, nil, data)
    local at = #req - #data + 1 -- where the body starts
    parts = {}
    local from = 1
    local i = string.find(req, marker, at, true)
    while i ~= nil do
        parts[#parts + 1] = string.sub(req, from, i - 1)
        parts[#parts + 1] = ""
        slots[#slots + 1] = #parts
        from = i + width
        i = string.find(req, marker, i + #marker, true)
    end
    parts[#parts + 1] = string.sub(req, from)
    if #slots == 0 then
        error("post_body.lua: no trace id placeholder in " .. path ..
              " (make it with bench/gen_bodies.mjs, or use mode same)")
    end
end

-- the counter as 8 bytes (or 16 hex digits): thread tag in the top 16
-- bits, the request number in the low 48
local function counter_bytes(n)
    local hi = tag * 65536 + math.floor(n / 4294967296)
    local lo = n % 4294967296
    if hex then
        return string.format("%08x%08x", hi, lo)
    end
    return string.char(math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256,
                       math.floor(hi / 256) % 256, hi % 256,
                       math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256,
                       math.floor(lo / 256) % 256, lo % 256)
end

function request()
    sent = sent + 1
    if pool ~= nil then
        local r = pool[pool_next]
        if sent > #pool then
            reused = reused + 1
        end
        pool_next = pool_next % #pool + 1
        return r
    end
    if parts == nil then
        return wrk.format()
    end
    counter = counter + 1
    local c = counter_bytes(counter)
    for k = 1, #slots do
        parts[slots[k]] = c
    end
    return table.concat(parts)
end

function response(status, headers, body)
    if status == 200 then
        ok = ok + 1
    elseif status == 503 then
        unavailable = unavailable + 1
    else
        other = other + 1
    end
end

function done(summary, latency, requests)
    local n200, n503, nother, nreused = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        n200 = n200 + (t:get("ok") or 0)
        n503 = n503 + (t:get("unavailable") or 0)
        nother = nother + (t:get("other") or 0)
        nreused = nreused + (t:get("reused") or 0)
    end
    io.write(string.format(
        'o2l-wrk {"requests":%d,"duration_us":%d,"bytes_read":%d,' ..
        '"status_200":%d,"status_503":%d,"status_other":%d,' ..
        '"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
        '"errors_timeout":%d,"latency_p50_us":%d,"latency_p99_us":%d,' ..
        '"reused":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        n200, n503, nother,
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.timeout,
        latency:percentile(50), latency:percentile(99), nreused))
end
