// SPDX-License-Identifier: Apache-2.0
//
// Golden table of the map stage. Every tests/data/golden/*.json file holds
// {"cases": [...]}, each case an OTLP/JSON export and the ingestion events
// it must produce, written from the mapping contract. The table is checked
// twice:
//   1. `otel2langfuse convert` on each case prints exactly the expected
//      events (same envelope ids, bodies matching deep-partially);
//   2. the daemon, delivering to the fake Langfuse (v3, ingestion output),
//      sends for each case exactly what convert printed, and that also
//      matches the expectation.
//
// Expectation syntax: an expected body is matched deep-partially: every
// key given must be present with an equal value (objects recursively
// partial; arrays element by element, same length); the string "$absent"
// means the key must not be present. ISO-8601 times compare by value, so
// 3 and 6 fractional digits both match.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import { REPO_DIR, startDaemon, startFakeLangfuse, waitFor, workDir } from './lib/harness.mjs';

const skip = !process.env.O2L_BIN && 'O2L_BIN is not set';
const GOLDEN_DIR = path.join(REPO_DIR, 'tests/data/golden');
const ABSENT = '$absent';
const KEBAB = /^[a-z0-9]+(-[a-z0-9]+)*$/;

// ---- loading and checking the table ------------------------------------

/** Long integers outside the input are compared as JS numbers. */
function untag(v) {
    if (typeof v === 'string' && v.startsWith('__int:')) return Number(v.slice(6));
    if (Array.isArray(v)) return v.map(untag);
    if (isObj(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, untag(x)]));
    return v;
}

function loadCases() {
    const files = fs
        .readdirSync(GOLDEN_DIR)
        .filter((f) => f.endsWith('.json'))
        .sort();
    const cases = [];
    for (const f of files) {
        // Integers too long for a double (times in nanoseconds) stay exact:
        // they are carried as tagged strings and written back as numbers.
        const text = fs.readFileSync(path.join(GOLDEN_DIR, f), 'utf8').replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"__int:$2"');
        const doc = JSON.parse(text);
        if (!doc || !Array.isArray(doc.cases)) throw new Error(`${f}: no "cases" array`);
        doc.cases.forEach((c, i) => cases.push({ ...c, expect: untag(c.expect), file: f, index: i }));
    }
    return cases;
}

/** The OTLP/JSON text of a case's input, long integers exact. */
function inputText(c) {
    return JSON.stringify(c.input).replace(/"__int:(-?\d+)"/g, '$1');
}

/** A trace or span id of the OTLP/JSON input as lowercase hex, or null. */
function idHex(v, bytes) {
    if (typeof v !== 'string') return null;
    if (v.length === bytes * 2 && /^[0-9a-fA-F]+$/.test(v)) return v.toLowerCase();
    const b = Buffer.from(v.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    return b.length === bytes ? b.toString('hex') : null;
}

/** Every span of an OTLP/JSON export, with its resource and scope. */
function spansOf(input) {
    const out = [];
    for (const rs of input?.resourceSpans ?? []) {
        for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) out.push(s);
        }
    }
    return out;
}

/** The trace ids a case touches: in its input and in its expectation. */
function caseTraceIds(c) {
    const ids = new Set();
    for (const s of spansOf(c.input)) {
        const h = idHex(s.traceId, 16);
        if (h) ids.add(h);
    }
    for (const e of c.expect ?? []) {
        const b = e.body ?? {};
        if (e.type === 'trace-create' && typeof b.id === 'string') ids.add(b.id.toLowerCase());
        if (typeof b.traceId === 'string') ids.add(b.traceId.toLowerCase());
    }
    return ids;
}

/** Problems of the table itself: shape, unique names, disjoint trace ids. */
function tableProblems(cases) {
    const problems = [];
    const names = new Map();
    const owner = new Map();
    for (const c of cases) {
        const where = `${c.file}#${c.index} ${c.name ?? '(no name)'}`;
        if (typeof c.name !== 'string' || !KEBAB.test(c.name)) problems.push(`${where}: name must be kebab-case`);
        if (names.has(c.name)) problems.push(`${where}: name also used in ${names.get(c.name)}`);
        names.set(c.name, c.file);
        if (typeof c.rule !== 'string' || !c.rule) problems.push(`${where}: no "rule"`);
        if (c.config !== undefined && (typeof c.config !== 'object' || Array.isArray(c.config) || c.config === null)) {
            problems.push(`${where}: "config" must be an object`);
        }
        if (!c.input || !Array.isArray(c.input.resourceSpans)) problems.push(`${where}: "input" has no resourceSpans`);
        if (!Array.isArray(c.expect)) {
            problems.push(`${where}: "expect" must be an array`);
            continue;
        }
        const seen = new Set();
        for (const e of c.expect) {
            if (typeof e.id !== 'string' || typeof e.type !== 'string' || typeof e.body !== 'object') {
                problems.push(`${where}: expected event needs id, type and body: ${JSON.stringify(e).slice(0, 120)}`);
            }
            if (seen.has(e.id)) problems.push(`${where}: expected id ${e.id} listed twice`);
            seen.add(e.id);
        }
        for (const id of caseTraceIds(c)) {
            const prev = owner.get(id);
            if (prev && prev !== c.name) problems.push(`${where}: trace id ${id} also used by case ${prev}`);
            owner.set(id, c.name);
        }
    }
    return problems;
}

// ---- matching ------------------------------------------------------------

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

/** An ISO time with Z as microsecond text, so precisions compare equal. */
function isoMicros(s) {
    const m = /^(.*T\d{2}:\d{2}:\d{2})(?:\.(\d+))?Z$/.exec(s);
    return `${m[1]}.${(m[2] ?? '').padEnd(6, '0').slice(0, 6)}Z`;
}

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const show = (v) => {
    const s = JSON.stringify(v);
    return s === undefined ? 'undefined' : s.length > 300 ? `${s.slice(0, 300)}...` : s;
};

/** Deep-partial match of `exp` against `got`; appends "path: why" to errs. */
function partialMatch(exp, got, at, errs) {
    if (Array.isArray(exp)) {
        if (!Array.isArray(got)) return errs.push(`${at}: expected an array ${show(exp)}, got ${show(got)}`);
        if (exp.length !== got.length) {
            return errs.push(`${at}: expected ${exp.length} elements ${show(exp)}, got ${got.length} ${show(got)}`);
        }
        exp.forEach((v, i) => partialMatch(v, got[i], `${at}[${i}]`, errs));
        return;
    }
    if (isObj(exp)) {
        if (!isObj(got)) return errs.push(`${at}: expected an object ${show(exp)}, got ${show(got)}`);
        for (const [k, v] of Object.entries(exp)) {
            const has = Object.prototype.hasOwnProperty.call(got, k);
            if (v === ABSENT) {
                if (has) errs.push(`${at}.${k}: expected absent, got ${show(got[k])}`);
            } else if (!has) {
                errs.push(`${at}.${k}: missing, expected ${show(v)}`);
            } else {
                partialMatch(v, got[k], `${at}.${k}`, errs);
            }
        }
        return;
    }
    if (typeof exp === 'string' && typeof got === 'string' && ISO.test(exp) && ISO.test(got)) {
        if (isoMicros(exp) !== isoMicros(got)) errs.push(`${at}: expected ${exp}, got ${got}`);
        return;
    }
    if (!Object.is(exp, got) && !(typeof exp === 'number' && exp === got)) {
        errs.push(`${at}: expected ${show(exp)}, got ${show(got)}`);
    }
}

/** Paths where two JSON values differ (for daemon vs convert). */
function diffPaths(a, b, at, out) {
    if (isDeepStrictEqual(a, b)) return;
    if (isObj(a) && isObj(b)) {
        for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) diffPaths(a[k], b[k], `${at}.${k}`, out);
        return;
    }
    if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
        a.forEach((v, i) => diffPaths(v, b[i], `${at}[${i}]`, out));
        return;
    }
    out.push(`${at}: convert ${show(a)}, daemon ${show(b)}`);
}

/** Problems of a list of events against a case's expectation. */
function checkExpectation(c, events) {
    const errs = [];
    const byId = new Map();
    for (const e of events) {
        if (byId.has(e.id)) errs.push(`event id ${e.id} produced more than once`);
        byId.set(e.id, e);
    }
    const want = new Set(c.expect.map((e) => e.id));
    for (const e of c.expect) {
        const got = byId.get(e.id);
        if (!got) {
            errs.push(`missing ${e.type} ${e.id}`);
            continue;
        }
        if (got.type !== e.type) errs.push(`${e.id}: type expected ${e.type}, got ${got.type}`);
        partialMatch(e.body, got.body, `${e.id} body`, errs);
    }
    for (const e of events) {
        if (!want.has(e.id)) errs.push(`extra ${e.type} ${e.id}: ${show(e.body)}`);
    }
    return errs;
}

/** The ingestion batch as a whole: creates only, and each trace's trace-create
 * ahead of that trace's observations. */
function batchProblems(events) {
    const errs = [];
    const firstTrace = new Map();
    events.forEach((e, i) => {
        if (!/-create$/.test(e.type)) errs.push(`${e.id}: ${e.type} is not a create event`);
        if (e.type === 'trace-create' && !firstTrace.has(e.body?.id)) firstTrace.set(e.body?.id, i);
    });
    events.forEach((e, i) => {
        if (e.type === 'trace-create') return;
        const at = firstTrace.get(e.body?.traceId);
        if (at === undefined) errs.push(`${e.id}: no trace-create for trace ${e.body?.traceId}`);
        else if (at > i) errs.push(`${e.id}: comes before the trace-create of its trace`);
    });
    return errs;
}

// ---- running convert -------------------------------------------------------

function configArgs(config) {
    return Object.entries(config ?? {}).map(([k, v]) => `--${k}=${Array.isArray(v) ? v.join(',') : v}`);
}

function convert(c, dir) {
    const file = path.join(dir, `${c.name}.json`);
    fs.writeFileSync(file, inputText(c));
    const res = spawnSync(process.env.O2L_BIN, ['convert', file, ...configArgs(c.config)], {
        encoding: 'utf8',
        timeout: 30000,
        maxBuffer: 64 * 1024 * 1024,
    });
    if (res.error) return { error: `convert failed to run: ${res.error.message}` };
    if (res.status !== 0) return { error: `convert exited ${res.status}: ${res.stderr.trim()}` };
    try {
        return { events: JSON.parse(res.stdout).batch, stderr: res.stderr };
    } catch (e) {
        return { error: `convert printed no JSON batch (${e.message}): ${res.stdout.slice(0, 300)}` };
    }
}

/** True when a span of the case has neither start nor end time: its times
 * are the receive time, which differs between convert and the daemon. */
function hasReceiveTimes(c) {
    const unset = (v) => v === undefined || v === null || v === 0 || v === '0';
    return spansOf(c.input).some((s) => unset(s.startTimeUnixNano) && unset(s.endTimeUnixNano));
}

function withoutTimes(body) {
    const { startTime, endTime, timestamp, completionStartTime, ...rest } = body ?? {};
    return rest;
}

// ---- the tests -------------------------------------------------------------

describe('golden table of the map stage', { skip }, () => {
    const cases = loadCases();
    const converted = new Map(); // name -> events printed by convert

    test('the table is well-formed: unique names, disjoint trace ids', () => {
        assert.ok(cases.length > 0, `no cases in ${GOLDEN_DIR}`);
        const problems = tableProblems(cases);
        assert.equal(problems.length, 0, `table problems:\n${problems.join('\n')}`);
    });

    test('convert prints exactly the expected events', { timeout: 300000 }, (t) => {
        const dir = workDir('golden-convert');
        const failures = [];
        for (const c of cases) {
            const res = convert(c, dir);
            const errs = res.error ? [res.error] : [...batchProblems(res.events), ...checkExpectation(c, res.events)];
            if (!res.error) converted.set(c.name, res.events);
            if (errs.length) {
                failures.push(`FAIL ${c.file} ${c.name} (${c.rule})\n    ${errs.join('\n    ')}`);
                t.diagnostic(`FAIL ${c.name}`);
            } else {
                t.diagnostic(`pass ${c.name}`);
            }
        }
        t.diagnostic(`${cases.length - failures.length}/${cases.length} cases pass`);
        assert.equal(failures.length, 0, `${failures.length} of ${cases.length} cases fail:\n${failures.join('\n')}`);
    });

    test('the daemon delivers exactly what convert printed', { timeout: 300000 }, async (t) => {
        // One daemon per distinct config.
        const groups = new Map();
        for (const c of cases) {
            const key = JSON.stringify(Object.entries(c.config ?? {}).sort());
            if (!groups.has(key)) groups.set(key, []);
            groups.get(key).push(c);
        }
        const failures = [];
        let passed = 0;
        for (const group of groups.values()) {
            const config = group[0].config;
            const fake = await startFakeLangfuse({ mode: 'v3' });
            const daemon = await startDaemon({
                langfuseUrl: fake.url,
                name: 'golden',
                args: ['--output', 'ingestion', '--assemble-window-ms', '400', '--assemble-root-grace-ms', '100', ...configArgs(config)],
                env: { O2L_RETRY_INITIAL_MS: '50', O2L_RETRY_MAX_MS: '300' },
            });
            try {
                // Which case owns which trace id and event id.
                const traceOwner = new Map();
                const wanted = new Set();
                for (const c of group) {
                    for (const id of caseTraceIds(c)) traceOwner.set(id, c.name);
                    for (const e of converted.get(c.name) ?? c.expect) {
                        wanted.add(e.id);
                        const tid = e.type === 'trace-create' ? e.body?.id : e.body?.traceId;
                        if (tid) traceOwner.set(tid, c.name);
                    }
                }
                for (const c of group) {
                    const res = await fetch(`${daemon.url}/v1/traces`, {
                        method: 'POST',
                        headers: { 'content-type': 'application/json' },
                        body: inputText(c),
                        signal: AbortSignal.timeout(10000),
                    });
                    const text = await res.text();
                    if (res.status !== 200) failures.push(`FAIL ${c.file} ${c.name}: daemon answered ${res.status}: ${text}`);
                }
                const seen = () => new Set(fake.events().map((e) => e.id));
                await waitFor(
                    () => {
                        const s = seen();
                        return [...wanted].every((id) => s.has(id));
                    },
                    {
                        timeoutMs: 30000,
                        what: 'every event convert printed',
                        describe: () => {
                            const s = seen();
                            return `missing ${[...wanted].filter((id) => !s.has(id)).join(', ')}; log:\n${daemon.logTail(20)}`;
                        },
                    },
                ).catch((e) => t.diagnostic(e.message.slice(0, 2000)));
                await new Promise((r) => setTimeout(r, 600));

                // The last delivery of each id, attributed to cases by trace id.
                const last = new Map();
                for (const e of fake.events()) last.set(e.id, e);
                const perCase = new Map(group.map((c) => [c.name, []]));
                const stray = [];
                for (const e of last.values()) {
                    const tid = e.type === 'trace-create' ? e.body?.id : e.body?.traceId;
                    const owner = traceOwner.get(tid);
                    if (owner) perCase.get(owner).push(e);
                    else stray.push(e);
                }
                for (const e of stray) failures.push(`FAIL stray event from the daemon, no case owns it: ${e.type} ${e.id} ${show(e.body)}`);
                const rejectedBy = new Map();
                for (const r of fake.rejections()) {
                    const tid = r.event?.type === 'trace-create' ? r.event?.body?.id : r.event?.body?.traceId;
                    const owner = traceOwner.get(tid) ?? '(unknown case)';
                    if (!rejectedBy.has(owner)) rejectedBy.set(owner, []);
                    rejectedBy.get(owner).push(`${r.id} refused by the fake: ${r.reason}`);
                }

                for (const c of group) {
                    const errs = [...(rejectedBy.get(c.name) ?? [])];
                    const daemonEvents = perCase.get(c.name);
                    const convertEvents = converted.get(c.name);
                    if (convertEvents) {
                        const strip = hasReceiveTimes(c) ? withoutTimes : (b) => b;
                        const d = new Map(daemonEvents.map((e) => [e.id, e]));
                        for (const e of convertEvents) {
                            const got = d.get(e.id);
                            if (!got) {
                                errs.push(`daemon did not deliver ${e.type} ${e.id}`);
                                continue;
                            }
                            if (got.type !== e.type) errs.push(`${e.id}: convert type ${e.type}, daemon type ${got.type}`);
                            const diffs = [];
                            diffPaths(strip(e.body), strip(got.body), `${e.id} body`, diffs);
                            errs.push(...diffs);
                        }
                        const ids = new Set(convertEvents.map((e) => e.id));
                        for (const e of daemonEvents) if (!ids.has(e.id)) errs.push(`daemon sent ${e.type} ${e.id} that convert did not print`);
                    } else {
                        errs.push('convert gave no events for this case (see the convert test)');
                    }
                    const exp = checkExpectation(c, daemonEvents);
                    errs.push(...exp.map((m) => `expectation: ${m}`));
                    if (errs.length) {
                        failures.push(`FAIL ${c.file} ${c.name} (${c.rule})\n    ${errs.join('\n    ')}`);
                        t.diagnostic(`FAIL ${c.name}`);
                    } else {
                        passed++;
                        t.diagnostic(`pass ${c.name}`);
                    }
                }
            } finally {
                await daemon.stop();
                await fake.close();
            }
        }
        t.diagnostic(`${passed}/${cases.length} cases pass`);
        assert.equal(failures.length, 0, `${failures.length} problems:\n${failures.join('\n')}`);
    });
});
