-- SPDX-License-Identifier: Apache-2.0
-- post_body.lua - wrk script of the benchmark: POSTs one file as the body
-- of every request to /v1/traces and counts the answers by status, so only
-- the requests the daemon acknowledged (200) are counted as accepted.
--
-- wrk ... -s bench/wrk/post_body.lua URL -- FILE [CONTENT_ENCODING]
-- FILE is sent as application/x-protobuf; CONTENT_ENCODING (e.g. gzip) is
-- sent as the Content-Encoding header when given (the file must already
-- be encoded that way). At the end one line is printed:
--   o2l-wrk {"requests":..,"status_200":..,"status_503":..,...}

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    local path = args[1]
    if path == nil then
        error("post_body.lua: give the body file after --")
    end
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.path = "/v1/traces"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/x-protobuf"
    if args[2] ~= nil and args[2] ~= "" then
        wrk.headers["Content-Encoding"] = args[2]
    end
    ok = 0
    unavailable = 0
    other = 0
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
    local n200, n503, nother = 0, 0, 0
    for _, t in ipairs(threads) do
        n200 = n200 + (t:get("ok") or 0)
        n503 = n503 + (t:get("unavailable") or 0)
        nother = nother + (t:get("other") or 0)
    end
    io.write(string.format(
        'o2l-wrk {"requests":%d,"duration_us":%d,"bytes_read":%d,' ..
        '"status_200":%d,"status_503":%d,"status_other":%d,' ..
        '"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
        '"errors_timeout":%d,"latency_p50_us":%d,"latency_p99_us":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        n200, n503, nother,
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.timeout,
        latency:percentile(50), latency:percentile(99)))
end
