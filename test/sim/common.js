// Shared plumbing of the local provider simulators (fal_sim.js, xai_sim.js):
// command line, knobs, the request log, the billing ledger, fault injection,
// a file store for the fake CDNs, fetching input media, and real MP4s made
// with the ffmpeg CLI.  Node's standard library only.
'use strict';
const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const { spawn } = require('child_process');
const { motionOf, motionKey, videoArgs, qualityOf, ambienceFilter } = require('./motion');

// ---------------------------------------------------------------- options

const USAGE = `options:
  --port N            port to listen on (0: any free port; default 0)
  --host H            loopback address to bind (default 127.0.0.1)
  --key K             accepted credential (repeatable)
  --time-scale X      real time = simulated time * X (default 1)
  --mode M            fast | realistic | deterministic (default fast)
  --seed N            seed of the fault dice and deterministic ids (default 1)
  --workdir DIR       where files and generated videos live (default: a temp dir)
  --port-file FILE    also write the base URL to FILE
  --video-size WxH    default output size (default 720p, or $HAGEN_SIM_VIDEO_SIZE;
                      also small (320x180), 480p, 1080p)
  --verbose           log every request to stderr`;

const SIZE_ALIASES = { small: '320x180', '480p': '854x480', '720p': '1280x720', '1080p': '1920x1080' };

// Parses "WxH" or an alias into [w, h] (even numbers), or null.
function parseSize(s) {
	const m = /^(\d+)x(\d+)$/.exec(SIZE_ALIASES[s] || String(s || ''));
	if (!m) return null;
	const w = Number(m[1]), h = Number(m[2]);
	if (w < 16 || h < 16 || w > 7680 || h > 7680) return null;
	return [w & ~1, h & ~1];
}

function isLoopbackHost(h) {
	h = String(h).replace(/^\[|\]$/g, '');
	return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

function parseArgs(argv, name, defaultKey) {
	const opts = { port: 0, host: '127.0.0.1', keys: [], timeScale: 1, mode: 'fast', seed: 1,
		workdir: null, portFile: null, videoSize: process.env.HAGEN_SIM_VIDEO_SIZE || '720p', verbose: false };
	const fail = (msg) => { process.stderr.write(`${name}: ${msg}\n${USAGE}\n`); process.exit(2); };
	for (let i = 2; i < argv.length; i++) {
		const a = argv[i];
		const v = () => { if (i + 1 >= argv.length) fail(`${a} needs a value`); return argv[++i]; };
		switch (a) {
		case '--port': opts.port = Number(v()); break;
		case '--host': opts.host = v(); break;
		case '--key': opts.keys.push(v()); break;
		case '--time-scale': opts.timeScale = Number(v()); break;
		case '--mode': opts.mode = v(); break;
		case '--seed': opts.seed = Number(v()); break;
		case '--workdir': opts.workdir = v(); break;
		case '--port-file': opts.portFile = v(); break;
		case '--video-size': opts.videoSize = v(); break;
		case '--verbose': opts.verbose = true; break;
		case '--help': process.stdout.write(USAGE + '\n'); process.exit(0); break;
		default: fail(`unknown option ${a}`);
		}
	}
	if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) fail('bad --port');
	if (!isLoopbackHost(opts.host)) fail('--host must be a loopback address');
	if (!(opts.timeScale > 0)) fail('--time-scale must be a positive number');
	if (!['fast', 'realistic', 'deterministic'].includes(opts.mode)) fail('--mode must be fast, realistic or deterministic');
	if (!Number.isFinite(opts.seed)) fail('bad --seed');
	if (!parseSize(opts.videoSize)) fail('bad --video-size (WxH, 480p, 720p or 1080p)');
	if (opts.keys.length === 0) opts.keys.push(defaultKey);
	return opts;
}

// ---------------------------------------------------------------- randomness

// A small seeded generator (mulberry32): the same seed gives the same dice.
class Rng {
	constructor(seed) { this.a = (Number(seed) >>> 0) || 1; }
	next() {
		let t = (this.a = (this.a + 0x6D2B79F5) | 0);
		t = Math.imul(t ^ (t >>> 15), 1 | t);
		t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	}
	// A version 4 UUID drawn from this generator.
	uuid() {
		const b = Buffer.alloc(16);
		for (let i = 0; i < 16; i++) b[i] = Math.floor(this.next() * 256);
		b[6] = (b[6] & 0x0f) | 0x40;
		b[8] = (b[8] & 0x3f) | 0x80;
		const h = b.toString('hex');
		return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
	}
}

const sha256 = (buf) => crypto.createHash('sha256').update(buf).digest('hex');

// ---------------------------------------------------------------- request log

const MAX_BODY_LOG = 64 * 1024;

// Shortens long strings inside a parsed JSON value (data: URLs, long prompts).
function clip(v, depth = 0) {
	if (typeof v === 'string') return v.length > 2048 ? `${v.slice(0, 2048)}...(${v.length} chars)` : v;
	if (depth > 8 || v === null || typeof v !== 'object') return v;
	if (Array.isArray(v)) return v.slice(0, 100).map((x) => clip(x, depth + 1));
	const o = {};
	for (const k of Object.keys(v).slice(0, 100)) o[k] = clip(v[k], depth + 1);
	return o;
}

// How a request body is kept in the log: parsed JSON, short text, or a digest.
function bodyForLog(buf, contentType) {
	if (!buf || buf.length === 0) return null;
	const ct = String(contentType || '');
	if (buf.length <= MAX_BODY_LOG && (/json|text/.test(ct) || ct === '')) {
		const text = buf.toString('utf8');
		try { return clip(JSON.parse(text)); } catch (e) { /* not JSON */ }
		if (/^[\x09\x0a\x0d\x20-\x7e\u00a0-\uffff]*$/.test(text)) return text.slice(0, 4096);
	}
	return { bytes: buf.length, sha256: sha256(buf) };
}

// The headers of a request as logged: Authorization cut to its first 4 characters.
function headersForLog(h) {
	const o = {};
	for (const [k, v] of Object.entries(h)) o[k] = k === 'authorization' ? `${String(v).slice(0, 4)}…` : v;
	return o;
}

// Every request seen (but /_sim/*), newest last, at most `max` kept.
class RequestLog {
	constructor() { this.entries = []; this.seq = 0; }
	add(entry, max) {
		entry.seq = ++this.seq;
		this.entries.push(entry);
		if (this.entries.length > max) this.entries.splice(0, this.entries.length - max);
		return entry;
	}
	clear() { this.entries = []; }
	query(q) {
		let list = this.entries;
		const prefix = q.get('path'), method = q.get('method'), since = Number(q.get('since') || 0);
		if (prefix) list = list.filter((e) => e.path.startsWith(prefix));
		if (method) list = list.filter((e) => e.method === method.toUpperCase());
		if (since) list = list.filter((e) => e.seq > since);
		const limit = Number(q.get('limit') || 0);
		return limit > 0 ? list.slice(-limit) : list;
	}
}

// ---------------------------------------------------------------- faults

// Fault specs live in knobs.faults[class] as a list; the first one that fires
// applies.  A spec fires when its trigger says so:
//   p: probability (seeded dice), every_nth: every n-th call of the class,
//   count: at most n times (alone: the next n calls), skip: ignore the first n calls.
// A spec with neither p nor every_nth fires on every call (within count).
class Faults {
	constructor() { this.state = new WeakMap(); this.fired = {}; }
	reset() { this.state = new WeakMap(); this.fired = {}; }
	pick(list, cls, rng) {
		if (!Array.isArray(list)) return null;
		for (const f of list) {
			if (!f || typeof f !== 'object') continue;
			let st = this.state.get(f);
			if (!st) this.state.set(f, (st = { calls: 0, fired: 0 }));
			st.calls++;
			if (f.skip > 0 && st.calls <= f.skip) continue;
			if (f.count !== undefined && st.fired >= Number(f.count)) continue;
			const n = st.calls - (f.skip > 0 ? f.skip : 0);
			let hit;
			if (f.every_nth > 0) hit = n % Math.floor(f.every_nth) === 0;
			else if (f.p !== undefined) hit = rng.next() < Number(f.p);
			else hit = true;
			if (!hit) continue;
			st.fired++;
			this.fired[cls] = (this.fired[cls] || 0) + 1;
			return f;
		}
		return null;
	}
}

// A short name of a fault spec, for the request log.
function faultName(f) {
	if (f.accept_then_drop) return 'accept_then_drop';
	const base = f.drop || f.reset ? 'reset' : f.stall_s !== undefined ? 'stall'
		: f.malformed ? 'malformed' : f.truncated ? 'truncated' : `status_${f.status || 500}`;
	return f.after_accept ? `${base}_after_accept` : base;
}

// True when the fault is carried out after the endpoint did its work (the
// answer is lost or spoiled but the effect, e.g. an accepted job, stays).
const isPostFault = (f) => Boolean(f.accept_then_drop || f.after_accept);

const NGINX_502 = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n'
	+ '<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';

// ---------------------------------------------------------------- request context

// One request: parsed URL, lazily read body, answers that honour a pending fault.
class Ctx {
	constructor(core, req, res) {
		this.core = core;
		this.req = req;
		this.res = res;
		this.url = new URL(req.url, 'http://sim');
		this.method = req.method;
		let parts;
		try { parts = this.url.pathname.split('/').filter(Boolean).map(decodeURIComponent); } catch (e) { parts = null; }
		this.parts = parts;
		this.query = this.url.searchParams;
		this.postFault = null;
		this.headers = {};		// extra headers put on every answer (e.g. x-fal-request-id)
		this.entry = null;
		this._body = null;
	}

	header(name) { return this.req.headers[name.toLowerCase()]; }

	// The body as a Buffer, at most `limit` bytes (a larger one gets 413).
	body(limit = 32 * 1024 * 1024) {
		if (!this._body) {
			this._body = new Promise((resolve, reject) => {
				const chunks = [];
				let n = 0;
				this.req.on('data', (c) => {
					n += c.length;
					if (n > limit) { reject(Object.assign(new Error('body too large'), { status: 413 })); this.req.destroy(); return; }
					chunks.push(c);
				});
				this.req.on('end', () => {
					const buf = Buffer.concat(chunks);
					if (this.entry) this.entry.body = bodyForLog(buf, this.header('content-type'));
					resolve(buf);
				});
				this.req.on('error', reject);
			});
		}
		return this._body;
	}

	// Streams the body into a file (uploads); resolves {bytes, sha256}.
	bodyToFile(file, limit) {
		return new Promise((resolve, reject) => {
			const out = fs.createWriteStream(file);
			const hash = crypto.createHash('sha256');
			let n = 0, failed = false;
			const fail = (err) => { if (failed) return; failed = true; out.destroy(); fs.rm(file, { force: true }, () => reject(err)); };
			this.req.on('data', (c) => {
				n += c.length;
				if (n > limit) { fail(Object.assign(new Error('body too large'), { status: 413 })); this.req.destroy(); return; }
				hash.update(c);
				if (!out.write(c)) { this.req.pause(); out.once('drain', () => this.req.resume()); }
			});
			this.req.on('end', () => {
				if (failed) return;
				out.end(() => {
					const r = { bytes: n, sha256: hash.digest('hex') };
					if (this.entry) this.entry.body = r;
					resolve(r);
				});
			});
			this.req.on('error', fail);
			out.on('error', fail);
		});
	}

	// Parses a JSON body: {ok, value} or {ok: false, error}.
	async json(limit) {
		const buf = await this.body(limit);
		try { return { ok: true, value: JSON.parse(buf.toString('utf8')), raw: buf }; } catch (e) { return { ok: false, error: e.message, raw: buf }; }
	}

	// Draws a fault for an endpoint class.  A fault that must act before the
	// work is carried out at once (returns true: the caller stops); one that
	// acts after it is kept for send() (returns false).
	// With deferBody, a malformed or truncated body spoils the real answer
	// (uploads are stored, files are cut) instead of replacing it.
	fault(cls, deferBody = false) {
		const f = this.core.faults.pick((this.core.knobs.faults || {})[cls], cls, this.core.rng);
		if (!f) return false;
		if (this.entry) this.entry.fault = faultName(f);
		if (isPostFault(f) || (deferBody && (f.malformed || f.truncated))) { this.postFault = f; return false; }
		this.applyFault(f, null);
		return true;
	}

	// Carries out a fault; `answer` is the {status, body, headers} that would
	// have been sent (after the work) or null (before it).
	applyFault(f, answer) {
		const sock = this.req.socket;
		const reset = () => { if (sock.resetAndDestroy) sock.resetAndDestroy(); else sock.destroy(); };
		if (f.accept_then_drop || f.drop || f.reset) return reset();
		if (f.stall_s !== undefined) {
			const t = setTimeout(() => {
				if (f.respond_after_stall && answer) this.sendNow(answer.status, answer.body, answer.headers);
				else if (f.respond_after_stall) this.sendError(f);
				else reset();
			}, Number(f.stall_s) * 1000);
			this.res.on('close', () => clearTimeout(t));
			return undefined;
		}
		if (f.malformed) {
			const text = answer && typeof answer.body === 'object'
				? JSON.stringify(answer.body).slice(0, -3) + '},,' : '{"status": "IN_PROGRESS", "request_id": ,}';
			return this.sendNow(answer ? answer.status : (f.status || 200), text, Object.assign({}, answer && answer.headers, { 'content-type': 'application/json' }));
		}
		if (f.truncated) {
			const full = answer ? Buffer.from(typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body))
				: Buffer.from('{"status":"COMPLETED","request_id":"00000000-0000-4000-8000-000000000000","logs":null,"metrics":{}}');
			this.res.writeHead(answer ? answer.status : 200, Object.assign(this.baseHeaders(), answer && answer.headers,
				{ 'content-type': 'application/json', 'content-length': full.length + 200 }));
			this.res.write(full.subarray(0, Math.max(1, Math.floor(full.length / 2))));
			setTimeout(reset, 20);
			return undefined;
		}
		return this.sendError(f);
	}

	// An injected error status with the provider's body for it.
	sendError(f) {
		const status = Number(f.status) || 500;
		if (status === 502 && !f.detail) {
			// An ingress error: nginx HTML, none of the provider's headers.
			return this.sendNow(502, NGINX_502, { 'content-type': 'text/html', server: 'nginx' }, true);
		}
		const e = this.core.errorFor(status, f, this);
		const headers = Object.assign({}, e.headers);
		if (f.retry_after !== undefined && f.retry_after !== null) headers['retry-after'] = String(f.retry_after);
		return this.sendNow(status, e.body, headers);
	}

	baseHeaders() { return Object.assign({}, this.core.defaultHeaders(this), this.headers); }

	// Answers, unless a fault kept for after the work spoils the answer.
	send(status, body, headers = {}) {
		if (this.postFault) {
			const f = this.postFault;
			this.postFault = null;
			return this.applyFault(f, { status, body, headers });
		}
		return this.sendNow(status, body, headers);
	}

	sendNow(status, body, headers = {}, bare = false) {
		if (this.res.headersSent || this.res.destroyed) return;
		let buf, type = 'application/json';
		if (body === null || body === undefined) buf = Buffer.alloc(0);
		else if (Buffer.isBuffer(body)) { buf = body; type = 'application/octet-stream'; }
		else if (typeof body === 'string') { buf = Buffer.from(body); type = 'text/plain; charset=utf-8'; }
		else buf = Buffer.from(JSON.stringify(body));
		const h = Object.assign(bare ? {} : this.baseHeaders(), { 'content-type': type, 'content-length': buf.length }, headers);
		for (const k of Object.keys(h)) if (h[k] === null || h[k] === undefined) delete h[k];
		this.res.writeHead(status, h);
		this.res.end(this.method === 'HEAD' ? undefined : buf);
	}

	// Serves a stored file with Range and HEAD support; a pending fault can
	// cut it short (truncated), spoil it (malformed) or reset it.
	sendFile(file) {
		let st;
		try { st = fs.statSync(file.path); } catch (e) { return this.sendNow(404, { detail: 'Not Found' }); }
		const f = this.postFault;
		this.postFault = null;
		if (f && !f.truncated && !f.malformed) return this.applyFault(f, { status: 200, body: '', headers: {} });
		let start = 0, end = st.size - 1, status = 200;
		const headers = Object.assign(this.baseHeaders(), { 'content-type': file.type, 'accept-ranges': 'bytes',
			'cache-control': 'public, max-age=3600', etag: `"${file.etag || st.size}"` });
		const range = /^bytes=(\d*)-(\d*)$/.exec(this.header('range') || '');
		if (range && !f) {
			if (range[1] === '') { start = Math.max(0, st.size - Number(range[2])); } else {
				start = Number(range[1]);
				if (range[2] !== '') end = Math.min(end, Number(range[2]));
			}
			if (start > end || start >= st.size) {
				this.res.writeHead(416, Object.assign(headers, { 'content-range': `bytes */${st.size}`, 'content-length': 0 }));
				return this.res.end();
			}
			status = 206;
			headers['content-range'] = `bytes ${start}-${end}/${st.size}`;
		}
		headers['content-length'] = end - start + 1;
		this.res.writeHead(status, headers);
		if (this.method === 'HEAD') return this.res.end();
		if (f && f.truncated) {
			// Promise the whole file, send half of it, then reset.
			const s = fs.createReadStream(file.path, { start: 0, end: Math.max(0, Math.floor(st.size / 2) - 1) });
			s.on('data', (c) => this.res.write(c));
			s.on('end', () => setTimeout(() => this.req.socket.destroy(), 20));
			return undefined;
		}
		if (f && f.malformed) {
			// The right length, the wrong bytes.
			const junk = Buffer.alloc(st.size, 0x5a);
			return this.res.end(junk);
		}
		const s = fs.createReadStream(file.path, { start, end });
		s.on('error', () => this.res.destroy());
		s.pipe(this.res);
		return undefined;
	}
}

// ---------------------------------------------------------------- file store

// Files served by a simulator's CDN: bytes on disk, with type and expiry.
class FileStore {
	constructor(dir) {
		this.dir = dir;
		fs.mkdirSync(dir, { recursive: true });
		this.files = new Map();		// relative path -> {path, type, size, expires_at}
	}
	put(rel, info) { this.files.set(rel, info); return info; }
	get(rel) {
		const f = this.files.get(rel);
		if (!f) return null;
		if (f.expires_at && Date.now() > f.expires_at) return null;
		return f;
	}
	tempPath() { return path.join(this.dir, crypto.randomBytes(12).toString('hex')); }
	clear() { this.files.clear(); }
}

// ---------------------------------------------------------------- fetching media

// Fetches an input URL the way a provider would, within this machine: a data:
// URL, a file of our own store (`own(url)` returns it), or an http URL on a
// loopback address.  Resolves {buf, type} or {error}.
function fetchMedia(url, own, { maxBytes = 20 * 1024 * 1024, timeoutMs = 10000, redirects = 3 } = {}) {
	return new Promise((resolve) => {
		if (typeof url !== 'string' || url === '') return resolve({ error: 'no URL' });
		if (url.startsWith('data:')) {
			const m = /^data:([^,]*?)(;base64)?,(.*)$/s.exec(url);
			if (!m) return resolve({ error: 'malformed data URL' });
			try {
				const buf = m[2] ? Buffer.from(m[3], 'base64') : Buffer.from(decodeURIComponent(m[3]), 'utf8');
				return resolve(buf.length > maxBytes ? { error: 'file too large' } : { buf, type: m[1] || 'application/octet-stream' });
			} catch (e) { return resolve({ error: 'malformed data URL' }); }
		}
		const mine = own(url);
		if (mine) {
			fs.readFile(mine.path, (err, buf) => resolve(err ? { error: err.message } : { buf, type: mine.type }));
			return undefined;
		}
		let u;
		try { u = new URL(url); } catch (e) { return resolve({ error: 'not a URL' }); }
		if (u.protocol !== 'http:') return resolve({ error: `cannot reach ${u.protocol} URLs from the simulator` });
		if (!isLoopbackHost(u.hostname)) return resolve({ error: `host ${u.hostname} is not reachable (no network)` });
		const req = http.get(u, { timeout: timeoutMs }, (r) => {
			if ([301, 302, 303, 307, 308].includes(r.statusCode) && r.headers.location && redirects > 0) {
				r.resume();
				return resolve(fetchMedia(new URL(r.headers.location, u).toString(), own, { maxBytes, timeoutMs, redirects: redirects - 1 }));
			}
			if (r.statusCode !== 200) { r.resume(); return resolve({ error: `HTTP ${r.statusCode}` }); }
			const chunks = [];
			let n = 0;
			r.on('data', (c) => {
				n += c.length;
				if (n > maxBytes) { req.destroy(); resolve({ error: 'file too large' }); return; }
				chunks.push(c);
			});
			r.on('end', () => resolve({ buf: Buffer.concat(chunks), type: r.headers['content-type'] || 'application/octet-stream' }));
			r.on('error', (e) => resolve({ error: e.message }));
			return undefined;
		});
		req.on('timeout', () => { req.destroy(); resolve({ error: 'timed out' }); });
		req.on('error', (e) => resolve({ error: e.message }));
		return undefined;
	});
}

// ---------------------------------------------------------------- videos

// Runs a command; resolves {code, stdout, stderr}.
function run(cmd, args, children) {
	return new Promise((resolve) => {
		let p;
		try { p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }); } catch (e) { return resolve({ code: -1, stdout: '', stderr: e.message }); }
		children.add(p);
		const out = [], err = [];
		p.stdout.on('data', (c) => out.push(c));
		p.stderr.on('data', (c) => { if (err.length < 64) err.push(c); });
		p.on('error', (e) => { children.delete(p); resolve({ code: -1, stdout: '', stderr: e.message }); });
		p.on('close', (code) => { children.delete(p); resolve({ code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }); });
		return undefined;
	});
}

// A counting semaphore: at most n ffmpeg processes at a time.
class Limiter {
	constructor(n) { this.n = n; this.busy = 0; this.waiting = []; }
	async run(fn) {
		if (this.busy >= this.n) await new Promise((r) => this.waiting.push(r));
		this.busy++;
		try { return await fn(); } finally {
			this.busy--;
			const next = this.waiting.shift();
			if (next) next();
		}
	}
}

const even = (x) => Math.max(2, Math.round(x / 2) * 2);

// The output size for an input of aspect w/h: the short side of the default
// size, the aspect of the input (clamped to 1:2.5 .. 2.5:1, as Kling's limits).
function sizeForAspect(defaultSize, aspect) {
	const [dw, dh] = defaultSize;
	if (!(aspect > 0)) return [dw, dh];
	const a = Math.min(2.5, Math.max(0.4, aspect));
	const short = Math.min(dw, dh);
	return a >= 1 ? [even(short * a), short] : [short, even(short / a)];
}

// Makes fake provider outputs with the ffmpeg CLI: an H.264/yuv420p MP4 at 24
// fps of exactly the asked duration, the camera move the prompt asks for over
// the start image (a test pattern when there is none), a move into the end
// image when there is a different one, and an AAC 48 kHz stereo room tone
// when asked (motion.js).  The same inputs give the same bytes (bit-exact
// flags, one thread), and outputs are cached by what they depend on.
class MediaMaker {
	constructor(dir, concurrency) {
		this.dir = dir;
		fs.mkdirSync(dir, { recursive: true });
		this.cache = new Map();		// key -> Promise<{path, size, sha256}>
		this.probes = new Map();		// image digest -> Promise<{width, height} | null>
		this.limit = new Limiter(Math.max(1, concurrency));
		this.children = new Set();
	}

	// Saves input bytes under their digest; returns {digest, file}.
	saveInput(buf) {
		const digest = sha256(buf);
		const file = path.join(this.dir, `in-${digest.slice(0, 32)}`);
		if (!fs.existsSync(file)) {
			const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`;
			fs.writeFileSync(tmp, buf);
			fs.renameSync(tmp, file);
		}
		return { digest, file };
	}

	// Width, height and duration of a media file, or null when ffprobe cannot read it.
	probe(file, key) {
		if (!this.probes.has(key)) {
			this.probes.set(key, this.limit.run(() => run('ffprobe', ['-v', 'error', '-select_streams', 'v:0',
				'-show_entries', 'stream=width,height:format=duration,format_name', '-of', 'json', file], this.children)).then((r) => {
				if (r.code !== 0) return null;
				try {
					const j = JSON.parse(r.stdout);
					const s = (j.streams || [])[0];
					if (!s || !(s.width > 0)) return null;
					return { width: s.width, height: s.height, duration: Number(j.format && j.format.duration) || null, format: j.format && j.format.format_name };
				} catch (e) { return null; }
			}));
			if (this.probes.size > 10000) this.probes.delete(this.probes.keys().next().value);
		}
		return this.probes.get(key);
	}

	// The image's {width, height}, or null when it is not an image ffmpeg reads.
	async probeImage(buf) {
		if (!buf || buf.length === 0) return null;
		const { digest, file } = this.saveInput(buf);
		return this.probe(file, digest);
	}

	// Resolves {path, size, sha256} of a video for the spec
	// {image, endImage (Buffers or null), duration (s), width, height, audio,
	//  prompt, quality (fast | kling | auto)}.
	video(spec) {
		const img = spec.image ? this.saveInput(spec.image) : null;
		const end = spec.endImage ? this.saveInput(spec.endImage) : null;
		spec = Object.assign({}, spec, { motion: spec.motion || motionOf(spec.prompt) });
		const useEndImage = end && (!img || end.digest !== img.digest);
		// Everything the bytes depend on, and nothing else: the prompt counts
		// only through its camera move and whether its ambience is outdoors.
		const key = [img ? img.digest.slice(0, 24) : 'pattern', useEndImage ? end.digest.slice(0, 24) : '-',
			spec.duration, `${spec.width}x${spec.height}`, qualityOf(spec), img ? motionKey(spec.motion) : '-',
			spec.audio ? `aac-${ambienceFilter(spec.prompt, 1, 1).outdoor ? 'out' : 'in'}` : 'silent'].join('_');
		if (!this.cache.has(key)) {
			const out = path.join(this.dir, `video_${key}.mp4`);
			const p = this.limit.run(async () => {
				if (!fs.existsSync(out)) {
					const useEnd = useEndImage ? end.file : null;
					const tmp = `${out}.${crypto.randomBytes(4).toString('hex')}.mp4`;
					const r = await run('ffmpeg', videoArgs(img && img.file, useEnd, spec, tmp), this.children);
					if (r.code !== 0 && img) {
						// The image is not decodable: a test pattern instead.
						const r2 = await run('ffmpeg', videoArgs(null, null, spec, tmp), this.children);
						if (r2.code !== 0) throw new Error(`ffmpeg failed: ${r2.stderr.trim().slice(-300)}`);
					} else if (r.code !== 0) throw new Error(`ffmpeg failed: ${r.stderr.trim().slice(-300)}`);
					fs.renameSync(tmp, out);
				}
				const buf = fs.readFileSync(out);
				return { path: out, size: buf.length, sha256: sha256(buf) };
			});
			this.cache.set(key, p);
			p.catch(() => this.cache.delete(key));
		}
		return this.cache.get(key);
	}

	// A still image (PNG), a frame of a test pattern: for image endpoints.
	image(width, height, index) {
		const key = `image_${width}x${height}_${index}`;
		if (!this.cache.has(key)) {
			const out = path.join(this.dir, `${key}.png`);
			const p = this.limit.run(async () => {
				if (!fs.existsSync(out)) {
					const tmp = `${out}.${crypto.randomBytes(4).toString('hex')}.png`;
					const r = await run('ffmpeg', ['-nostdin', '-v', 'error', '-y', '-f', 'lavfi', '-i',
						`testsrc2=s=${width}x${height}:r=1:d=${index + 1}`, '-vf', `select=eq(n\\,${index})`, '-frames:v', '1',
						'-fflags', '+bitexact', '-flags:v', '+bitexact', tmp], this.children);
					if (r.code !== 0) throw new Error(`ffmpeg failed: ${r.stderr.trim().slice(-300)}`);
					fs.renameSync(tmp, out);
				}
				const buf = fs.readFileSync(out);
				return { path: out, size: buf.length, sha256: sha256(buf) };
			});
			this.cache.set(key, p);
			p.catch(() => this.cache.delete(key));
		}
		return this.cache.get(key);
	}

	// Runs ffmpeg with arbitrary arguments into `out` (ffmpeg-api endpoints).
	async ffmpeg(args) {
		const r = await this.limit.run(() => run('ffmpeg', ['-nostdin', '-v', 'error', '-y', ...args], this.children));
		if (r.code !== 0) throw new Error(`ffmpeg failed: ${r.stderr.trim().slice(-300)}`);
	}

	killAll() { for (const p of this.children) p.kill('SIGKILL'); }
}

// ---------------------------------------------------------------- the server

// The state every simulator shares, and its HTTP server.  A simulator gives:
//   defaults()            its knobs' defaults
//   route(ctx)            handles a request (async)
//   errorFor(status, f, ctx) -> {body, headers} of an injected error status
//   defaultHeaders(ctx)   headers on every answer
//   control(ctx, what)    extra /_sim/<what> endpoints (return true if handled)
//   onReset()             forget jobs
class SimCore {
	constructor(name, opts, provider) {
		this.name = name;
		this.opts = opts;
		this.p = provider;
		this.ownWorkdir = !opts.workdir;
		this.workdir = opts.workdir || fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
		fs.mkdirSync(this.workdir, { recursive: true });
		this.files = new FileStore(path.join(this.workdir, 'files'));
		this.media = new MediaMaker(path.join(this.workdir, 'media'), os.cpus().length || 2);
		this.requests = new RequestLog();
		this.faults = new Faults();
		this.ledger = [];
		this.base = '';
		this.timers = new Set();
		this.resetKnobs();
	}

	resetKnobs() {
		this.knobs = this.p.defaults();
		this.rng = new Rng(this.opts.seed);
		this.idRng = new Rng(this.opts.seed * 7919 + 17);
		this.faults.reset();
	}

	// Forgets everything but the cache of generated media.
	reset() {
		this.resetKnobs();
		this.ledger = [];
		this.requests.clear();
		for (const t of this.timers) clearTimeout(t);
		this.timers.clear();
		this.p.onReset();
	}

	// A new id: seeded in deterministic mode, random otherwise.
	uuid() { return this.opts.mode === 'deterministic' ? this.idRng.uuid() : crypto.randomUUID(); }

	// Real milliseconds of a simulated duration in seconds.
	ms(simSeconds) { return Math.max(0, Number(simSeconds) || 0) * 1000 * this.opts.timeScale; }

	// setTimeout that reset() and shutdown cancel.
	later(simSeconds, fn) {
		const t = setTimeout(() => { this.timers.delete(t); fn(); }, this.ms(simSeconds));
		this.timers.add(t);
		return t;
	}

	// The output size configured now: the video_size knob, else --video-size.
	defaultSize() { return parseSize(this.knobs.video_size) || parseSize(this.opts.videoSize); }

	errorFor(status, f, ctx) { return this.p.errorFor(status, f, ctx); }
	defaultHeaders(ctx) { return this.p.defaultHeaders ? this.p.defaultHeaders(ctx) : {}; }

	log(msg) { if (this.opts.verbose) process.stderr.write(`${this.name}: ${msg}\n`); }

	// /_sim/* (no auth).
	async control(ctx, what) {
		if (what === 'ledger') {
			if (ctx.query.get('summary')) return ctx.sendNow(200, ledgerSummary(this.ledger));
			return ctx.sendNow(200, this.ledger);
		}
		if (what === 'requests') return ctx.sendNow(200, this.requests.query(ctx.query));
		if (what === 'reset' && ctx.method === 'POST') { this.reset(); return ctx.sendNow(200, { reset: true }); }
		if (what === 'health') return ctx.sendNow(200, { ok: true, name: this.name, base: this.base, mode: this.opts.mode, time_scale: this.opts.timeScale });
		if (what === 'faults') return ctx.sendNow(200, { fired: this.faults.fired });
		if (what === 'config' && ctx.method === 'POST') {
			const j = await ctx.json(1024 * 1024);
			if (!j.ok || !j.value || typeof j.value !== 'object' || Array.isArray(j.value)) return ctx.sendNow(400, { detail: 'the body must be a JSON object of knobs' });
			if (ctx.query.get('replace')) { this.knobs = this.p.defaults(); this.faults.reset(); }
			const bad = Object.keys(j.value).filter((k) => !(k in this.knobs));
			if (bad.length && !ctx.query.get('lenient')) return ctx.sendNow(400, { detail: `unknown knobs: ${bad.join(', ')}`, known: Object.keys(this.knobs) });
			Object.assign(this.knobs, j.value);	// each top-level knob replaces its old value
			if ('faults' in j.value) this.faults.reset();
			return ctx.sendNow(200, this.knobs);
		}
		if (what === 'config') return ctx.sendNow(200, this.knobs);
		if (this.p.control && await this.p.control(ctx, what)) return undefined;
		return ctx.sendNow(404, { detail: `unknown control endpoint /_sim/${what}` });
	}

	async handle(req, res) {
		const ctx = new Ctx(this, req, res);
		if (!ctx.parts) return ctx.sendNow(400, { detail: 'bad path encoding' });
		if (ctx.parts[0] === '_sim') return this.control(ctx, ctx.parts[1]);
		const started = Date.now();
		ctx.entry = this.requests.add({ method: req.method, path: ctx.url.pathname, query: ctx.url.search || undefined,
			headers: headersForLog(req.headers), body: null, status: null, time: new Date(started).toISOString(), ms: null },
		Number(this.knobs.max_logged_requests) || 20000);
		res.on('close', () => {
			ctx.entry.status = res.headersSent ? res.statusCode : 0;	// 0: no answer (reset or stalled)
			ctx.entry.ms = Date.now() - started;
			this.log(`${req.method} ${req.url} -> ${ctx.entry.status}`);
		});
		return this.p.route(ctx);
	}

	// Listens, prints {"listening": base} on stdout, and handles signals.
	listen() {
		const server = http.createServer((req, res) => {
			this.handle(req, res).catch((err) => {
				if (err && err.status === 413) {
					const ctx = new Ctx(this, req, res);
					ctx.sendNow(413, { detail: 'Request body too large' });
					return;
				}
				process.stderr.write(`${this.name}: ${err && err.stack || err}\n`);
				if (!res.headersSent) {
					const body = JSON.stringify({ detail: `simulator error: ${err && err.message}` });
					res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
					res.end(body);
				} else res.destroy();
			});
		});
		server.keepAliveTimeout = 30000;
		server.requestTimeout = 0;
		server.headersTimeout = 60000;
		server.maxHeadersCount = 200;
		const sockets = new Set();
		server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
		server.on('clientError', (err, s) => { if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n'); else s.destroy(); });
		const shutdown = () => {
			server.close();
			for (const s of sockets) s.destroy();
			for (const t of this.timers) clearTimeout(t);
			this.media.killAll();
			if (this.ownWorkdir) { try { fs.rmSync(this.workdir, { recursive: true, force: true }); } catch (e) { /* best effort */ } }
			process.exit(0);
		};
		process.on('SIGTERM', shutdown);
		process.on('SIGINT', shutdown);
		server.on('error', (err) => { process.stderr.write(`${this.name}: ${err.message}\n`); process.exit(1); });
		server.listen(this.opts.port, this.opts.host, () => {
			const a = server.address();
			const host = a.family === 'IPv6' || a.family === 6 ? `[${a.address}]` : a.address;
			this.base = `http://${host}:${a.port}`;
			if (this.opts.portFile) {
				const tmp = `${this.opts.portFile}.tmp${process.pid}`;
				fs.writeFileSync(tmp, this.base);
				fs.renameSync(tmp, this.opts.portFile);
			}
			process.stdout.write(`${JSON.stringify({ listening: this.base })}\n`);
		});
		this.server = server;
		return server;
	}
}

// ---------------------------------------------------------------- client side (tests, harness scripts)

// Starts a simulator script as a child process; resolves {base, proc, stop()}.
function spawnSim(script, args = [], { timeoutMs = 10000, env = process.env } = {}) {
	return new Promise((resolve, reject) => {
		const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
		let out = '', err = '';
		const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error(`${script} did not start: ${err}`)); }, timeoutMs);
		proc.stderr.on('data', (c) => { err += c; });
		proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${script} exited with ${code}: ${err}`)); });
		proc.stdout.on('data', (c) => {
			out += c;
			const nl = out.indexOf('\n');
			if (nl < 0) return;
			clearTimeout(timer);
			const { listening } = JSON.parse(out.slice(0, nl));
			const stop = () => new Promise((r) => { if (proc.exitCode !== null) return r(proc.exitCode); proc.once('exit', (c2) => r(c2)); proc.kill('SIGTERM'); return undefined; });
			resolve({ base: listening, proc, stop, stderr: () => err, stdout: () => out });
		});
	});
}

// One HTTP request.  Resolves {status, headers, body (Buffer), text, json}
// or, when the connection fails, {error: code} (e.g. ECONNRESET, TIMEOUT).
function request(method, url, { headers = {}, body, timeoutMs = 10000 } = {}) {
	return new Promise((resolve) => {
		let data = body;
		const h = Object.assign({}, headers);
		if (data !== undefined && !Buffer.isBuffer(data) && typeof data !== 'string') {
			data = JSON.stringify(data);
			if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['content-type'] = 'application/json';
		}
		if (data !== undefined) h['content-length'] = Buffer.byteLength(data);
		let res = null;
		const chunks = [];
		// A connection that fails after the head: what arrived, with the error.
		const broken = (code) => resolve(res ? { error: code, status: res.statusCode, headers: res.headers, partial: Buffer.concat(chunks) } : { error: code });
		const req = http.request(url, { method, headers: h, agent: false }, (r) => {
			res = r;
			res.on('data', (c) => chunks.push(c));
			res.on('error', (e) => broken(e.code || e.message));
			res.on('aborted', () => broken('ABORTED'));
			res.on('end', () => {
				const buf = Buffer.concat(chunks);
				const text = buf.toString('utf8');
				let json;
				try { json = JSON.parse(text); } catch (e) { json = undefined; }
				resolve({ status: res.statusCode, headers: res.headers, body: buf, text, json });
			});
		});
		req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
		req.on('error', (e) => broken(e.code || e.message));
		req.end(data);
	});
}

// Totals of a ledger: what was paid, and inputs paid for more than once.
function ledgerSummary(ledger) {
	const byInput = new Map();
	let cents = 0, billed = 0;
	for (const e of ledger) {
		cents += e.cents;
		if (e.billed !== false) billed += e.cents;
		const k = e.input_sha256;
		byInput.set(k, (byInput.get(k) || 0) + 1);
	}
	const duplicates = [...byInput.entries()].filter(([, n]) => n > 1).map(([input_sha256, n]) => ({ input_sha256, submits: n }));
	return { submits: ledger.length, cents: round(cents), billed_cents: round(billed), duplicate_inputs: duplicates };
}

const round = (x) => Math.round(x * 10000) / 10000;

// A stable digest of a JSON value (keys sorted), to spot the same input twice.
function jsonDigest(v) {
	const canon = (x) => (x === null || typeof x !== 'object') ? x
		: Array.isArray(x) ? x.map(canon) : Object.fromEntries(Object.keys(x).sort().map((k) => [k, canon(x[k])]));
	return sha256(JSON.stringify(canon(v))).slice(0, 32);
}

module.exports = {
	parseArgs, parseSize, sizeForAspect, motionOf, isLoopbackHost, Rng, sha256, jsonDigest, round,
	RequestLog, Faults, Ctx, FileStore, fetchMedia, MediaMaker, SimCore, ledgerSummary, NGINX_502,
	spawnSim, request,
};
