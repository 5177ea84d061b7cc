// The command line: --help, --version, and settings errors that stop the
// daemon at start with a message naming the setting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { REPO_DIR, quietEnv, startDaemon, workDir } from './lib/harness.mjs';

const bin = process.env.O2L_BIN;
const skip = !bin && 'O2L_BIN is not set';

// A scratch working directory, so that a daemon that gets as far as
// opening its spool leaves nothing in the source tree.
let scratch;
function run(args, env = {}) {
    scratch ??= workDir('cli');
    return spawnSync(bin, args, { cwd: scratch, encoding: 'utf8', env: quietEnv(env), timeout: 20000 });
}

test('--help lists the settings and --version the version', { skip }, () => {
    const help = run(['--help']);
    assert.equal(help.status, 0);
    for (const word of ['serve', 'convert', 'LANGFUSE_PUBLIC_KEY', 'O2L_HTTP_LISTEN', '--config']) {
        assert.ok(help.stdout.includes(word), `help mentions ${word}`);
    }
    const version = run(['--version']);
    assert.equal(version.status, 0);
    assert.match(version.stdout, /^otel2langfuse \d+\.\d+\.\d+/);
});

test('a wrong value stops the daemon and names the setting', { skip }, () => {
    const cases = [
        [{ O2L_FLUSH_INTERVAL_MS: 'soon' }, /export\.flush_interval_ms.*O2L_FLUSH_INTERVAL_MS/],
        [{ O2L_OUTPUT: 'kafka' }, /output.*O2L_OUTPUT/],
        [{ O2L_LOG_LEVEL: 'loud' }, /log\.level/],
        [{ O2L_HTTP_LISTEN: 'nowhere' }, /receivers\.http\.listen/],
        [{ LANGFUSE_BASE_URL: 'ftp://x' }, /langfuse\.base_url/],
        [{ LANGFUSE_PUBLIC_KEY: 'pk-lf-only' }, /secret_key/],
    ];
    for (const [env, pattern] of cases) {
        const res = run(['serve'], env);
        assert.equal(res.status, 2, `${JSON.stringify(env)}: ${res.stderr}`);
        assert.match(res.stderr, pattern);
        assert.ok(!res.stderr.includes('sk-lf'), 'no secret in the message');
    }
    const flag = run(['serve', '--batch-max-events', '0']);
    assert.equal(flag.status, 2);
    assert.match(flag.stderr, /export\.batch_max_events.*--batch-max-events/);
    const unknown = run(['serve', '--no-such-flag']);
    assert.equal(unknown.status, 2);
    const bare = run(['serve', '--flush-interval-ms']);
    assert.equal(bare.status, 2);
    assert.match(bare.stderr, /export\.flush_interval_ms.*needs a value/);
    const sink = run(['serve', '--http-listen', '127.0.0.1:0', '--file-sink', '/nonexistent/dir/x.jsonl']);
    assert.equal(sink.status, 2);
    assert.match(sink.stderr, /export\.file_sink: cannot open \/nonexistent\/dir\/x\.jsonl/);
    const spool = run(['serve', '--http-listen', '127.0.0.1:0', '--spool-dir', '/nonexistent/dir/spool']);
    assert.equal(spool.status, 2);
    assert.match(spool.stderr, /spool\.dir/);
    const dead = run(['serve', '--http-listen', '127.0.0.1:0', '--dead-letter-file', '/nonexistent/dir/dl.jsonl']);
    assert.equal(dead.status, 2);
    assert.match(dead.stderr, /export\.dead_letter_file/);
    const mult = run(['serve', '--retry-multiplier', '0.5']);
    assert.equal(mult.status, 2);
    assert.match(mult.stderr, /export\.retry_multiplier/);
    const sub = run(['dead-letter']);
    assert.equal(sub.status, 2);
    assert.match(sub.stderr, /replay/);
});

test('a YAML file is read, and its errors name file, line and key', { skip }, () => {
    const dir = workDir('cli-yaml');
    const good = path.join(dir, 'good.yaml');
    fs.writeFileSync(good, 'export:\n  flush_interval_ms: 250\nmapping:\n  control_flow_exceptions: [A, B]\n');
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'export:\n  flush_interval_ms: 250\n  no_such_key: 1\n');
    const wrong = path.join(dir, 'wrong.yaml');
    fs.writeFileSync(wrong, 'export:\n  flush_interval_ms: -3\n');

    const conv = run(['convert', '--config', good], {});
    assert.equal(conv.status, 0, conv.stderr);
    const r1 = run(['serve', '--config', bad]);
    assert.equal(r1.status, 2);
    assert.match(r1.stderr, /bad\.yaml line 3: unknown setting export\.no_such_key/);
    const r2 = run(['serve', '--config', wrong]);
    assert.equal(r2.status, 2);
    assert.match(r2.stderr, /export\.flush_interval_ms \(.*wrong\.yaml line 2\)/);
    const r3 = run(['serve', '--config', path.join(dir, 'missing.yaml')]);
    assert.equal(r3.status, 2);
    assert.match(r3.stderr, /missing\.yaml: cannot open/);
});

test('the shipped sample configuration loads', { skip }, () => {
    const res = run(['convert', '--config', path.join(REPO_DIR, 'config/otel2langfuse.yaml')]);
    assert.equal(res.status, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout), { batch: [] });
});

test('the log masks credentials in the URL and control characters', { skip }, async () => {
    const daemon = await startDaemon({ langfuseUrl: 'http://someone:hunter2@127.0.0.1:9', name: 'cli-log' });
    const forged = '\n2026-01-01T00:00:00.000Z error main FORGED\u001b[31m';
    const body = JSON.stringify({
        resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'zz', spanId: '00000000000000f1', name: forged }] }] }],
    });
    const res = await fetch(`${daemon.url}/v1/traces`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body,
    });
    assert.equal(res.status, 200);
    await daemon.stop();
    const log = daemon.log();
    assert.ok(!log.includes('hunter2'), 'password not logged');
    assert.ok(log.includes('http://***@127.0.0.1:9'));
    assert.ok(!/^2026-01-01T00:00:00.000Z error main FORGED/m.test(log), 'no forged line');
    assert.ok(!log.includes('\u001b'), 'no escape codes');
    assert.ok(!log.includes('sk-lf'), 'no secret key');
});
