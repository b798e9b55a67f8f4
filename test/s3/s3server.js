// The local S3 server of hagenkit's tests and demo: @20minutes/s3rver
// (which verifies SigV4 header and presigned signatures), path style, on a
// loopback port, with our own key pair.  Prints {"listening": URL} when
// ready; objects are readable without auth, like a public bucket.
//
//   node --openssl-legacy-provider test/s3/s3server.js [--port N] [--access-key K]
//        [--secret S] [--bucket B]... [--dir DIR] [--request-log FILE] [--part-delay-ms N]
//
// --request-log appends one line per request ("METHOD URL STATUS START END",
// times in ms since the epoch) to FILE,
// so tests can count what reached the server; --part-delay-ms holds every
// UploadPart request that long before it is served, so tests can act in the
// middle of a multipart upload.
//
// Faults, set while it runs: PUT /_faults?match=TEXT&method=M&count=N&status=S
// makes the next N requests whose method is M (any when omitted) and whose
// URL contains TEXT fail with status S (default 503) and an S3 error body
// (SlowDown for 503, InternalError otherwise); DELETE /_faults clears them.
// Node 20 needs --openssl-legacy-provider: s3rver encrypts ListObjectsV2
// continuation tokens with DES.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const S3rver = require('@20minutes/s3rver');
const AWSAccount = require('@20minutes/s3rver/lib/models/account');

function parseArgs(argv) {
	const opts = { port: 0, accessKey: process.env.S3_ACCESS_KEY || 'hagen-test',
		secret: process.env.S3_SECRET || 'hagen-test-secret', buckets: [], dir: null,
		requestLog: null, partDelayMs: 0 };
	for (let i = 0; i < argv.length; i++) {
		const next = () => argv[++i];
		switch (argv[i]) {
		case '--port': opts.port = Number(next()); break;
		case '--access-key': opts.accessKey = next(); break;
		case '--secret': opts.secret = next(); break;
		case '--bucket': opts.buckets.push(next()); break;
		case '--dir': opts.dir = next(); break;
		case '--request-log': opts.requestLog = next(); break;
		case '--part-delay-ms': opts.partDelayMs = Number(next()); break;
		default: throw new Error(`unknown option ${argv[i]}`);
		}
	}
	return opts;
}

async function main() {
	const opts = parseArgs(process.argv.slice(2));
	const dir = opts.dir || fs.mkdtempSync(path.join(os.tmpdir(), 's3rver-'));
	fs.mkdirSync(dir, { recursive: true });
	// Our key pair instead of the built-in S3RVER/S3RVER.
	AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
	AWSAccount.DUMMY_ACCOUNT.createKeyPair(opts.accessKey, opts.secret);
	const server = new S3rver({
		address: '127.0.0.1',
		port: opts.port,
		silent: true,
		directory: dir,
		configureBuckets: opts.buckets.map((name) => ({ name, configs: [] })),
	});
	// Koa composes its middleware when it starts listening: ours go first.
	const faults = [];
	server.middleware.unshift(async (ctx, next) => {
		if (ctx.path === '/_faults') {
			if (ctx.method === 'DELETE') faults.length = 0;
			else faults.push({ match: String(ctx.query.match || ''), method: ctx.query.method || null,
				count: Number(ctx.query.count || 1), status: Number(ctx.query.status || 503) });
			ctx.status = 204;
			return;
		}
		const f = faults.find((x) => x.count > 0 && ctx.url.includes(x.match)
			&& (!x.method || x.method === ctx.method));
		if (f) {
			f.count--;
			const code = f.status === 503 ? 'SlowDown' : 'InternalError';
			ctx.status = f.status;
			ctx.type = 'application/xml';
			ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code>`
				+ `<Message>injected by the test server</Message><Resource>${ctx.path}</Resource></Error>`;
			return;
		}
		await next();
	});
	if (opts.partDelayMs > 0) {
		server.middleware.unshift(async (ctx, next) => {
			if (ctx.method === 'PUT' && 'partNumber' in ctx.query)
				await new Promise((resolve) => setTimeout(resolve, opts.partDelayMs));
			await next();
		});
	}
	if (opts.requestLog) {
		server.middleware.unshift(async (ctx, next) => {
			const start = Date.now();
			try {
				await next();
			} finally {
				fs.appendFileSync(opts.requestLog, `${ctx.method} ${ctx.url} ${ctx.status} ${start} ${Date.now()}\n`);
			}
		});
	}
	const { port } = await server.run();
	process.stdout.write(JSON.stringify({ listening: `http://127.0.0.1:${port}` }) + '\n');
	const stop = () => process.exit(0);
	process.on('SIGTERM', stop);
	process.on('SIGINT', stop);
}

main().catch((err) => {
	process.stderr.write(`s3server: ${err.stack || err}\n`);
	process.exit(1);
});
