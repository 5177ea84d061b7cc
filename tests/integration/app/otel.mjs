// OpenTelemetry plumbing shared by the test apps: their command line, an
// OTLP span exporter for each protocol the bridge serves, and the SDK's
// diagnostic logger turned into stderr lines plus a list of export errors.

import { parseArgs } from 'node:util';

/**
 * The app's command line: --url (required), --protocol, --gzip and the
 * app's own |extra| options. Exits 2 when --url is missing.
 */
export function exportArgs(app, extra = {}) {
    const { values } = parseArgs({
        options: {
            protocol: { type: 'string', default: 'http/json' },
            url: { type: 'string' },
            gzip: { type: 'boolean', default: false },
            ...extra,
        },
        strict: true,
    });
    if (!values.url) {
        process.stderr.write(`${app}: --url is required\n`);
        process.exit(2);
    }
    return values;
}

/** An OTLP trace exporter for 'http/json', 'http/protobuf' or 'grpc'. */
export async function makeExporter(protocol, url, gzip) {
    const compression = gzip ? 'gzip' : 'none';
    const base = url.replace(/\/+$/, '');
    if (protocol === 'http/json') {
        const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
        return new OTLPTraceExporter({ url: `${base}/v1/traces`, compression, timeoutMillis: 10000 });
    }
    if (protocol === 'http/protobuf') {
        const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-proto');
        return new OTLPTraceExporter({ url: `${base}/v1/traces`, compression, timeoutMillis: 10000 });
    }
    if (protocol === 'grpc') {
        const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-grpc');
        const grpc = await import('@grpc/grpc-js');
        return new OTLPTraceExporter({
            url: base,
            compression,
            timeoutMillis: 10000,
            credentials: grpc.credentials.createInsecure(),
        });
    }
    throw new Error(`unknown protocol ${protocol}`);
}

/**
 * Routes the SDK's warnings and errors to stderr, so a failed export shows
 * in the test output. Returns the list the errors are collected in.
 */
export async function watchExportErrors() {
    const { diag, DiagLogLevel } = await import('@opentelemetry/api');
    const errors = [];
    const line = (level, a) => process.stderr.write(`otel ${level}: ${a.map(String).join(' ')}\n`);
    diag.setLogger(
        {
            error: (...a) => {
                errors.push(a.map(String).join(' '));
                line('error', a);
            },
            warn: (...a) => line('warn', a),
            info: () => {},
            debug: () => {},
            verbose: () => {},
        },
        DiagLogLevel.WARN,
    );
    return errors;
}
