// The command line: --help, --version, and settings errors that stop the
// daemon at start with a message naming the setting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { quietEnv, workDir } from './lib/harness.mjs';

const bin = process.env.O2L_BIN;
const skip = !bin && 'O2L_BIN is not set';

function run(args, env = {}) {
    return spawnSync(bin, args, { encoding: 'utf8', env: quietEnv(env), timeout: 20000 });
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
