// Helpers for the end-to-end tests: start the fake Langfuse and the daemon,
// run the instrumented app as a child process, wait for delivered events and
// query them. Everything listens on 127.0.0.1 and every wait is bounded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const IT_DIR = path.resolve(here, '..');
export const REPO_DIR = path.resolve(IT_DIR, '../..');

export const PUBLIC_KEY = 'pk-lf-integration';
export const SECRET_KEY = 'sk-lf-integration';

/** Environment for child processes: offline, no LangSmith, no proxies. */
export function quietEnv(extra = {}) {
    const env = { ...process.env };
    for (const k of Object.keys(env)) {
        if (/^(http|https|all)_proxy$/i.test(k) || /^OTEL_/.test(k) || /^LANGFUSE_/.test(k)) delete env[k];
    }
    return {
        ...env,
        LANGCHAIN_TRACING_V2: 'false',
        LANGCHAIN_TRACING: 'false',
        LANGSMITH_TRACING: 'false',
        LANGCHAIN_CALLBACKS_BACKGROUND: 'false',
        NO_PROXY: '127.0.0.1,localhost',
        ...extra,
    };
}

/** A directory for logs and scratch files of this test run. */
export function workDir(name) {
    const base = process.env.O2L_BUILD_DIR ? path.join(process.env.O2L_BUILD_DIR, 'it-work') : os.tmpdir();
    fs.mkdirSync(base, { recursive: true });
    return fs.mkdtempSync(path.join(base, `${name}-`));
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll until fn() returns a truthy value; return that value. Throws after
 * timeoutMs with `what` and the last value seen (describe(last) if given).
 */
export async function waitFor(fn, { timeoutMs = 20000, intervalMs = 100, what = 'condition', describe } = {}) {
    const deadline = Date.now() + timeoutMs;
    let last;
    for (;;) {
        last = await fn();
        if (last) return last;
        if (Date.now() >= deadline) break;
        await sleep(intervalMs);
    }
    const detail = describe ? `: ${describe()}` : '';
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
}

/** Start the fake Langfuse (tests/fake_langfuse/server.mjs) on a free port. */
export async function startFakeLangfuse(opts = {}) {
    const mod = await import(path.join(REPO_DIR, 'tests/fake_langfuse/server.mjs'));
    return mod.startFakeLangfuse({ publicKey: PUBLIC_KEY, secretKey: SECRET_KEY, port: 0, ...opts });
}

/** host:port of `key=` in the daemon's start line, or null. */
function addressIn(line, key) {
    const m = new RegExp(`\\b${key}=(\\S+):(\\d+)\\b`).exec(line);
    return m ? { host: m[1], port: Number(m[2]) } : null;
}

/**
 * Start `$O2L_BIN serve` delivering to langfuseUrl. Resolves once the daemon
 * logs its start line (`... listening http=HOST:PORT ...`). Options:
 *   env       extra environment (wins over the defaults below)
 *   args      extra command-line arguments after `serve`
 *   name      prefix of the work directory (logs, file sink)
 *   spoolDir  sets O2L_SPOOL_DIR; restart with the same one to recover
 *   cwd       the daemon's working directory (default: the work directory,
 *             so the default spool ./otel2langfuse-spool is per daemon)
 * The admin server listens on 127.0.0.1:0 (O2L_ADMIN_LISTEN) unless env
 * says otherwise.
 * Returns {url, port, grpcPort, adminUrl, adminPort, dir, spoolDir,
 * logPath, log(), logTail(), pid, exited(), stop(), kill()}: grpcPort and
 * adminUrl are null when the start line does not name them. stop() sends
 * SIGTERM and rejects unless the daemon exits with status 0; kill() sends
 * SIGKILL and resolves {code, signal} once the process is gone.
 */
export async function startDaemon({ langfuseUrl, env = {}, args = [], name = 'daemon', startTimeoutMs = 15000, spoolDir, cwd } = {}) {
    const bin = process.env.O2L_BIN;
    if (!bin) throw new Error('O2L_BIN is not set (CTest sets it to the built otel2langfuse)');
    const dir = workDir(name);
    const logPath = path.join(dir, 'daemon.log');
    const logFile = fs.openSync(logPath, 'w');
    const port = await freePort();
    const child = spawn(bin, ['serve', ...args], {
        cwd: cwd || dir,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: quietEnv({
            LANGFUSE_PUBLIC_KEY: PUBLIC_KEY,
            LANGFUSE_SECRET_KEY: SECRET_KEY,
            LANGFUSE_BASE_URL: langfuseUrl,
            O2L_HTTP_LISTEN: `127.0.0.1:${port}`,
            O2L_GRPC_LISTEN: '127.0.0.1:0',
            O2L_ADMIN_LISTEN: '127.0.0.1:0',
            O2L_FLUSH_INTERVAL_MS: '200',
            O2L_LOG_LEVEL: 'debug',
            O2L_FILE_SINK: path.join(dir, 'events.jsonl'),
            ...(spoolDir ? { O2L_SPOOL_DIR: spoolDir } : {}),
            ...env,
        }),
    });
    let text = '';
    let exited = null;
    let logOpen = true;
    const onData = (d) => {
        text += d.toString('utf8');
        if (logOpen) fs.writeSync(logFile, d);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const exitPromise = new Promise((resolve) => {
        child.on('exit', (code, signal) => {
            exited = { code, signal };
            resolve(exited);
        });
    });
    // Output may still be in the pipes when 'exit' fires; 'close' is last.
    const closePromise = new Promise((resolve) => child.on('close', resolve));
    const closeLog = () => {
        if (!logOpen) return;
        logOpen = false;
        fs.closeSync(logFile);
    };
    const tail = (n = 60) => text.split('\n').slice(-n).join('\n');

    let startLine;
    try {
        startLine = await waitFor(
            () => {
                if (exited) throw new Error(`daemon exited early (${JSON.stringify(exited)}); log:\n${tail()}`);
                // The whole line, so that every address on it is there.
                const m = /^.*listening http=[^\s:]+:\d+.*\n/m.exec(text);
                return m ? m[0] : null;
            },
            { timeoutMs: startTimeoutMs, intervalMs: 50, what: 'the daemon to listen', describe: () => `log:\n${tail()}` },
        );
    } catch (err) {
        if (!exited) child.kill('SIGKILL');
        await exitPromise;
        await closePromise;
        closeLog();
        throw err;
    }
    const http = addressIn(startLine, 'http');
    // Older start lines name only http; gRPC then has a line of its own.
    const grpc = addressIn(startLine, 'grpc') || addressIn((/listening grpc=\S+/.exec(text) || [''])[0], 'grpc');
    const admin = addressIn(startLine, 'admin');

    return {
        url: `http://127.0.0.1:${http.port}`,
        port: http.port,
        grpcPort: grpc ? grpc.port : null,
        adminUrl: admin ? `http://127.0.0.1:${admin.port}` : null,
        adminPort: admin ? admin.port : null,
        dir,
        spoolDir: spoolDir || null,
        logPath,
        log: () => text,
        logTail: tail,
        pid: child.pid,
        exited: () => exited,
        async stop({ timeoutMs = 20000 } = {}) {
            if (!exited) child.kill('SIGTERM');
            const timer = setTimeout(() => {
                if (!exited) child.kill('SIGKILL');
            }, timeoutMs);
            const res = await exitPromise;
            clearTimeout(timer);
            await closePromise;
            closeLog();
            if (res.code !== 0) {
                throw new Error(`daemon did not exit cleanly on SIGTERM (${JSON.stringify(res)}); log:\n${tail()}`);
            }
            return res;
        },
        async kill() {
            if (!exited) child.kill('SIGKILL');
            const res = await exitPromise;
            await closePromise;
            closeLog();
            return res;
        },
    };
}

// ---- the daemon's admin server ----

/** GET a path of the admin server: {status, text, headers}. */
export async function adminGet(daemon, route, { timeoutMs = 5000 } = {}) {
    if (!daemon.adminUrl) throw new Error(`the daemon's start line names no admin address; log:\n${daemon.logTail(20)}`);
    const res = await fetch(`${daemon.adminUrl}${route}`, { signal: AbortSignal.timeout(timeoutMs) });
    return { status: res.status, text: await res.text(), headers: res.headers };
}

/**
 * The daemon's /metrics as {name: value}; samples of one name with
 * different labels are added up.
 */
export async function metricsOf(daemon) {
    const res = await adminGet(daemon, '/metrics');
    if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${res.text}`);
    const out = {};
    for (const line of res.text.split('\n')) {
        if (!line || line.startsWith('#')) continue;
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
        if (m) out[m[1]] = (out[m[1]] ?? 0) + Number(m[3]);
    }
    return out;
}

/**
 * The JSON lines of a file (the dead-letter file, a file sink); [] when it
 * does not exist yet. A last line still being written is left out.
 */
export function readJsonLines(file) {
    let text;
    try {
        text = fs.readFileSync(file, 'utf8');
    } catch (e) {
        if (e.code === 'ENOENT') return [];
        throw e;
    }
    const out = [];
    for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        try {
            out.push(JSON.parse(line));
        } catch {
            // A torn last line; the next read sees it whole.
        }
    }
    return out;
}

/**
 * Runs one of the test apps (a script under app/) in its own node process.
 * Resolves {code, stdout, stderr, result}, result being the JSON of the
 * last stdout line, and rejects on a timeout.
 */
export function runNodeApp(script, args, { timeoutMs = 60000 } = {}) {
    const argv = [path.join(IT_DIR, 'app', script), ...args];
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, argv, { cwd: IT_DIR, stdio: ['ignore', 'pipe', 'pipe'], env: quietEnv() });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
            child.kill('SIGKILL');
            reject(new Error(`${script} timed out after ${timeoutMs} ms; stderr:\n${stderr}`));
        }, timeoutMs);
        child.on('exit', (code) => {
            clearTimeout(timer);
            let result = null;
            try {
                result = JSON.parse(stdout.trim().split('\n').pop());
            } catch {
                result = null;
            }
            resolve({ code, stdout, stderr, result });
        });
    });
}

/** The same for an app that takes --url, --protocol and --gzip. */
export function runExportApp(script, { url, protocol = 'http/json', gzip = false, extra = [], timeoutMs = 60000 }) {
    const args = ['--url', url, '--protocol', protocol, ...extra];
    if (gzip) args.push('--gzip');
    return runNodeApp(script, args, { timeoutMs });
}

/** The message for an app that failed. */
export function appFailure(run) {
    return `app exit ${run.code}\nstdout:\n${run.stdout}\nstderr:\n${run.stderr}`;
}

/** Runs the LangGraph app (app/run.mjs) once. */
export function runApp({ instrumentation, protocol, url, gzip = false, propagate = false, runs = 1, timeoutMs = 60000 }) {
    const extra = ['--instrumentation', instrumentation];
    if (propagate) extra.push('--propagate');
    if (runs !== 1) extra.push('--runs', String(runs));
    return runExportApp('run.mjs', { url, protocol, gzip, extra, timeoutMs });
}

// ---- queries over ingestion events ({id, type, timestamp, body}) ----

/** 'span-create' -> 'SPAN', 'generation-create' -> 'GENERATION', ... */
export function observationType(event) {
    return event.type.replace(/-create$/, '').toUpperCase();
}

export function traceCreates(events) {
    return events.filter((e) => e.type === 'trace-create');
}

/** Observation events: every *-create except trace-create and score-create. */
export function observations(events) {
    return events.filter((e) => /-create$/.test(e.type) && e.type !== 'trace-create' && e.type !== 'score-create');
}

/** Events belonging to one trace id (trace-create by body.id, others by body.traceId). */
export function forTrace(events, traceId) {
    return events.filter((e) => (e.type === 'trace-create' ? e.body.id === traceId : e.body.traceId === traceId));
}

/** The one trace-create of a trace id (throws unless exactly one). */
export function trace(events, traceId) {
    const t = traceCreates(events).filter((e) => e.body.id === traceId);
    if (t.length !== 1) throw new Error(`expected one trace-create for ${traceId}, got ${t.length}`);
    return t[0];
}

export function observationsByName(events, name) {
    return observations(events).filter((e) => e.body.name === name);
}

export function observationsByType(events, type) {
    return observations(events).filter((e) => observationType(e) === type);
}

export function observationById(events, id) {
    return observations(events).find((e) => e.body.id === id);
}

export function childrenOf(events, parentId) {
    return observations(events).filter((e) => e.body.parentObservationId === parentId);
}

/** Observations sorted by start time (ISO strings with Z sort as text only at equal precision). */
export function byStart(list) {
    return list.slice().sort((a, b) => Date.parse(a.body.startTime) - Date.parse(b.body.startTime) || String(a.body.startTime).localeCompare(String(b.body.startTime)));
}

/** The distinct trace ids seen in events. */
export function traceIds(events) {
    const ids = new Set();
    for (const e of events) {
        if (e.type === 'trace-create') ids.add(e.body.id);
        else if (e.body && e.body.traceId) ids.add(e.body.traceId);
    }
    return [...ids];
}

/** One line per event, for failure messages. */
export function summarize(events) {
    return events
        .map((e) => `${e.type} id=${e.body && e.body.id} name=${e.body && e.body.name} parent=${e.body && e.body.parentObservationId}`)
        .join('\n');
}

/**
 * Wait until the fake has, for a single trace, a trace-create and at least
 * minObservations observations, then wait settleMs more (bounded) so late
 * duplicates would show. Returns {traceId, events} for that trace.
 */
export async function waitForTrace(fake, { minObservations, timeoutMs = 20000, settleMs = 1000 } = {}) {
    const found = await waitFor(
        () => {
            const events = fake.events();
            for (const t of traceCreates(events)) {
                const mine = forTrace(events, t.body.id);
                if (observations(mine).length >= minObservations) return t.body.id;
            }
            return null;
        },
        { timeoutMs, what: `a trace with ${minObservations} observations`, describe: () => summarize(fake.events()) },
    );
    await sleep(settleMs);
    return { traceId: found, events: fake.events() };
}

/** An after() hook that stops the daemon, then closes the fake Langfuse. */
export function stopAll(getDaemon, getFake) {
    return async () => {
        let stopError = null;
        const daemon = getDaemon();
        const fake = getFake();
        if (daemon) {
            try {
                await daemon.stop();
            } catch (err) {
                stopError = err;
            }
        }
        if (fake) await fake.close();
        if (stopError) throw stopError;
    };
}

/**
 * Waits until the fake's OTLP route holds |count| spans, lets a late
 * duplicate show up, and checks each came once, over OTLP only, with the
 * v4 ingestion header. Returns the spans.
 */
export async function waitForOtlpSpans(fake, daemon, count, what = 'each span delivered once') {
    await waitFor(() => fake.spans().length >= count, {
        timeoutMs: 20000,
        what: `${count} spans on the OTLP route`,
        describe: () => `${fake.spans().length} spans; daemon log:\n${daemon.logTail(30)}`,
    });
    await new Promise((r) => setTimeout(r, 500));
    const spans = fake.spans();
    assert.equal(spans.length, count, what);
    assert.deepEqual(fake.events(), [], 'nothing accepted on the ingestion route');
    for (const r of fake.requests().filter((q) => q.route === 'otlp')) {
        assert.equal(r.ingestionVersion, '4', 'x-langfuse-ingestion-version: 4');
    }
    return spans;
}

/** The spans the fake's OTLP route holds, a line each, for a failure message. */
export function spanSummary(fake) {
    return fake.spans().map((s) => `${s.name} ${JSON.stringify(s.attributes['langfuse.observation.type'])}`).join('\n');
}
