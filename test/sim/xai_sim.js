#!/usr/bin/env node
// A local simulator of xAI's video API (Grok Imagine) for hagenkit's tests.
// Contract: /work/shared/specs/xai.md section 10 (the API: sections 2-7).
// Node's standard library only; videos are real MP4s made by the ffmpeg CLI.
// See README.md next to this file.
//
//   node test/sim/xai_sim.js [--port 0] [--key TOKEN] [--mode fast|realistic|deterministic]
//        [--time-scale X] [--seed N] [--workdir DIR] [--port-file FILE] [--video-size WxH]
//
// Prints {"listening":"http://127.0.0.1:PORT"}.  A client with
// hagen.xai_url = BASE/v1 sees the real relative paths; video URLs are
// BASE/files/xai-video-<id>.mp4 and need no auth.
'use strict';
const fs = require('fs');
const http = require('http');
const C = require('./common');

const opts = C.parseArgs(process.argv, 'xai_sim', 'xai-test-key');

function defaults() {
	return {
		processing_s: opts.mode === 'realistic' ? 30 : 0.25,	// simulated seconds pending
		polls_before_done: 1,			// deterministic mode: polls answered 202 pending
		fail_jobs: 0,				// the next n accepted jobs fail ...
		fail_p: 0,				// ... or each with this probability
		fail_code: 'internal_error',		// invalid_argument, permission_denied, failed_precondition, service_unavailable, internal_error
		fail_message: null,
		moderate_jobs: 0,			// the next n jobs end done with respect_moderation false
		empty_202: false,			// pending answers are 202 with an empty body
		legacy_shape: false,			// Jan-Feb 2026 bodies: done without a status field
		job_ttl: null,				// simulated seconds after which a request answers expired
		url_ttl: 86400,				// simulated seconds a video URL stays readable
		require_fetchable_images: true,	// an image the simulator cannot fetch fails the job
		honor_resolution: false,		// outputs at 480p/720p/1080p instead of the small default
		video_size: null,			// "WxH" or small/480p/720p/1080p; null: --video-size
		video_quality: 'auto',			// fast | kling | auto (kling from 720 lines up); see motion.js
		rate_limit_rpm: 0,			// token bucket per key (0: off; xAI's own: 70)
		rate_limit_scope: 'submit',		// submit | all
		rate_limit_retry_after: false,		// add Retry-After to 429s
		auth_error_status: 400,			// xAI answers a bad key with 400 (some saw 401)
		prices: null,				// {model: {resolution: cents per second}} overrides
		faults: {},				// {class: [spec, ...]} for submit, status, cdn, images
		max_logged_requests: 20000,
		max_jobs: 100000,
	};
}

// Cents per generated second by model and resolution (grok-imagine-video:
// $0.05/s, the models page; 1.5: third-party quotes, see the spec).
const PRICES = {
	'grok-imagine-video': { '480p': 5, '720p': 5 },
	'grok-imagine-video-1.5': { '480p': 8, '720p': 14, '1080p': 25 },
	'grok-imagine-video-1.5-lite': { '480p': 2, '720p': 3.5, '1080p': 6.25 },
	'grok-imagine-video-1.5-preview': { '480p': 8, '720p': 14, '1080p': 25 },
};
const ALIASES = { 'grok-imagine-video-beta': 'grok-imagine-video', 'grok-imagine-video-1.5-2026-05-30': 'grok-imagine-video-1.5-preview' };
const IMAGE_MODELS = { 'grok-imagine-image': 2, 'grok-imagine-image-quality': 7, 'grok-imagine-image-pro': 7 };
const ASPECTS = ['1:1', '16:9', '9:16', '4:3', '3:4', '3:2', '2:3'];
const IMAGE_ASPECTS = ['1:1', '3:4', '4:3', '9:16', '16:9', '2:3', '3:2', '9:19.5', '19.5:9', '9:20', '20:9', '1:2', '2:1', 'auto'];
const SIZES = { '848x480': '480p', '1696x960': '720p', '1280x720': '720p', '1920x1080': '1080p' };
const SHORT_SIDE = { '480p': 480, '720p': 720, '1080p': 1080 };
const is15 = (m) => m.startsWith('grok-imagine-video-1.5');

const jobs = new Map();
const buckets = new Map();		// key -> {tokens, at}
const core = new C.SimCore('xai_sim', opts, { defaults, route, errorFor, control, onReset() { jobs.clear(); buckets.clear(); } });
const team = new C.Rng(opts.seed * 31 + 5).uuid();

const nowIso = () => new Date().toISOString();
const invalid = (error) => ({ code: 'invalid-argument', error });

function errorFor(status, f, ctx) {
	const model = (ctx && ctx.model) || 'grok-imagine-video';
	const bodies = {
		400: invalid(f.detail || 'Client specified an invalid argument'),
		403: { code: 'permission-denied', error: f.detail || 'Your team has used all available credits.' },
		429: { code: 'resource-exhausted', error: f.detail || `Too many requests for team ${team} and model ${model}. Please slow down.` },
		500: { code: 'internal', error: f.detail || 'Internal server error' },
		503: { code: 'unavailable', error: f.detail || 'The service is currently unavailable. Please try again later.' },
		504: { code: 'deadline-exceeded', error: f.detail || 'The request timed out.' },
	};
	return { body: bodies[status] || { code: 'unknown', error: f.detail || `Injected HTTP ${status}` }, headers: {} };
}

// ------------------------------------------------------------------ auth and limits

function authorized(ctx) {
	const h = ctx.header('authorization') || '';
	const m = /^Bearer\s+(\S+)$/i.exec(h);
	if (m && opts.keys.includes(m[1])) { ctx.key = m[1]; return true; }
	const given = m ? m[1] : '';
	const masked = given.length > 4 ? `${given.slice(0, 2)}***${given.slice(-2)}` : '***';
	ctx.sendNow(Number(core.knobs.auth_error_status) || 400, invalid(`Incorrect API key provided: ${masked}. You can obtain an API key from https://console.x.ai.`));
	return false;
}

// A token bucket per key: rate_limit_rpm requests a minute, bursts of rpm/60.
function rateLimited(ctx, kind) {
	const rpm = Number(core.knobs.rate_limit_rpm) || 0;
	if (rpm <= 0 || (kind !== 'submit' && core.knobs.rate_limit_scope !== 'all')) return false;
	const cap = Math.max(1, Math.ceil(rpm / 60));
	const now = Date.now();
	const b = buckets.get(ctx.key) || { tokens: cap, at: now };
	b.tokens = Math.min(cap, b.tokens + ((now - b.at) / 60000) * rpm);
	b.at = now;
	buckets.set(ctx.key, b);
	if (b.tokens >= 1) { b.tokens -= 1; return false; }
	const headers = core.knobs.rate_limit_retry_after ? { 'retry-after': String(Math.max(1, Math.ceil(((1 - b.tokens) * 60) / rpm))) } : {};
	ctx.sendNow(429, errorFor(429, {}, ctx).body, headers);
	return true;
}

// ------------------------------------------------------------------ request checks

// serde's name for the type of a JSON value.
function kindOf(v) {
	if (v === null) return 'null';
	if (Array.isArray(v)) return 'sequence';
	if (typeof v === 'object') return 'map';
	if (typeof v === 'number') return Number.isInteger(v) ? `integer \`${v}\`` : `floating point \`${v}\``;
	if (typeof v === 'boolean') return `boolean \`${v}\``;
	return `string ${JSON.stringify(v)}`;
}

class Deser extends Error {}
const deser = (field, v, expected) => new Deser(`${field}: invalid type: ${kindOf(v)}, expected ${expected} at line 1 column 1`);

// Type checks of the fields (serde would refuse to deserialize: 422 text).
function checkTypes(b, fields) {
	for (const [k, t] of Object.entries(fields)) {
		const v = b[k];
		if (v === undefined || v === null) continue;
		const ok = t === 'string' ? typeof v === 'string' : t === 'boolean' ? typeof v === 'boolean'
			: t === 'object' ? typeof v === 'object' && !Array.isArray(v) : t === 'array' ? Array.isArray(v) : true;
		if (!ok) throw deser(k, v, t === 'object' ? 'a map' : t === 'array' ? 'a sequence' : `a ${t}`);
	}
}

// An integer duration from a number or numeric string; throws Deser otherwise.
function durationOf(b, field) {
	const v = b[field];
	if (v === undefined || v === null) return null;
	if (typeof v === 'number' && Number.isInteger(v)) return v;
	if (typeof v === 'string' && /^\d+$/.test(v.trim())) return Number(v.trim());
	throw deser(field, v, 'u32');
}

// An image object {url | image_url | file_id}; returns {url} or {file_id}.
function imageOf(v, what) {
	if (v === undefined || v === null) return null;
	if (typeof v !== 'object' || Array.isArray(v)) throw deser(what, v, 'struct ImageUrl');
	const keys = ['url', 'image_url', 'file_id'].filter((k) => v[k] !== undefined && v[k] !== null);
	if (keys.length !== 1) return { bad: `${what} must set exactly one of url or file_id` };
	if (typeof v[keys[0]] !== 'string') throw deser(`${what}.${keys[0]}`, v[keys[0]], 'a string');
	return keys[0] === 'file_id' ? { file_id: v.file_id } : { url: v[keys[0]] };
}

function modelOf(b) {
	const m = b.model === undefined || b.model === null ? 'grok-imagine-video' : b.model;
	return ALIASES[m] || m;
}

// Validates a generation request: {job fields} or throws Deser / returns {error}.
function checkGeneration(b) {
	checkTypes(b, { model: 'string', prompt: 'string', aspect_ratio: 'string', resolution: 'string', size: 'string',
		reference_images: 'array', reference_audios: 'array', generate_audio: 'boolean', output: 'object', storage_options: 'object', user: 'string' });
	const model = modelOf(b);
	if (!PRICES[model]) return { error: `The model ${model} does not exist or your team ${team} does not have access to it.` };
	let duration = durationOf(b, 'duration');
	if (duration === null) duration = durationOf(b, 'seconds');
	if (duration === null) duration = 8;
	const image = imageOf(b.image !== undefined && b.image !== null ? b.image : b.input_reference, 'image');
	if (image && image.bad) return { error: image.bad };
	const refs = b.reference_images || [];
	const refImages = refs.map((r, i) => imageOf(r, `reference_images[${i}]`));
	const bad = refImages.find((r) => r && r.bad);
	if (bad) return { error: bad.bad };
	const audios = b.reference_audios || [];
	const r2v = refs.length > 0;
	if (duration < 1 || duration > 15) return { error: `duration must be between 1 and 15 seconds, got ${duration}` };
	if (r2v && duration > 10) return { error: 'duration must be at most 10 seconds with reference_images' };
	const aspects = is15(model) ? [...ASPECTS, '21:9', '5:2'] : ASPECTS;
	const aspect = b.aspect_ratio === undefined || b.aspect_ratio === null ? '16:9' : b.aspect_ratio;
	if (!aspects.includes(aspect)) return { error: `Invalid aspect_ratio ${aspect}; expected one of ${aspects.join(', ')}` };
	let resolution = b.resolution === undefined || b.resolution === null ? null : b.resolution;
	if (resolution === null && b.size) {
		if (!SIZES[b.size]) return { error: `Invalid size ${b.size}; expected one of ${Object.keys(SIZES).join(', ')}` };
		resolution = SIZES[b.size];
	}
	resolution = resolution || '480p';
	const resolutions = is15(model) && !r2v ? ['480p', '720p', '1080p'] : ['480p', '720p'];
	if (!resolutions.includes(resolution)) return { error: `Invalid resolution ${resolution} for model ${model}; expected one of ${resolutions.join(', ')}` };
	if (refs.length > 7) return { error: 'reference_images accepts at most 7 images' };
	if (audios.length > 0 && !is15(model)) return { error: `reference_audios is not supported by model ${model}` };
	if (audios.length > 3) return { error: 'reference_audios accepts at most 3 items' };
	if (image && r2v && !is15(model)) return { error: 'image and reference_images cannot be used together with this model' };
	if (b.output && typeof b.output.upload_url !== 'string') return { error: 'output.upload_url must be a string' };
	const prompt = typeof b.prompt === 'string' ? b.prompt : '';
	return { model, duration, aspect, resolution, image, prompt, audio: b.generate_audio !== false,
		uploadUrl: b.output && b.output.upload_url, emptyPrompt: prompt.trim() === '' && !image };
}

// Validates an edit or extension request.
function checkEdit(b, kind) {
	checkTypes(b, { model: 'string', prompt: 'string', output: 'object', storage_options: 'object', user: 'string' });
	const model = modelOf(b);
	if (!PRICES[model]) return { error: `The model ${model} does not exist or your team ${team} does not have access to it.` };
	if (typeof b.prompt !== 'string' || b.prompt.trim() === '') return { error: 'prompt is required' };
	const video = imageOf(b.video, 'video');
	if (!video) return { error: 'video is required' };
	if (video.bad) return { error: video.bad };
	let ext = null;
	if (kind === 'extension') {
		ext = durationOf(b, 'duration');
		if (ext === null) ext = 6;
		if (ext < 2 || ext > 10) return { error: `duration must be between 2 and 10 seconds, got ${ext}` };
	}
	return { model, prompt: b.prompt, video, ext, resolution: '720p', audio: true, uploadUrl: b.output && b.output.upload_url };
}

// ------------------------------------------------------------------ the fake model

// A file of our own store for a URL of it, or null.
function ownFile(url) {
	const prefix = `${core.base}/files/`;
	if (typeof url !== 'string' || !url.startsWith(prefix)) return null;
	return core.files.get(url.slice(prefix.length).split(/[?#]/)[0]);
}

const failed = (code, message) => ({ state: 'failed', error: { code, message } });

// Makes the video of a job; resolves {state: done|failed, ...}.
async function work(job) {
	const k = core.knobs;
	if (job.kind === 'generation' && job.emptyPrompt) return failed('invalid_argument', 'Prompt cannot be empty. Please provide a prompt.');
	if (job.kind !== 'generation' && is15(job.model)) return failed('failed_precondition', `Model ${job.model} does not support video ${job.kind}s.`);
	let image = null, dims = null, duration = job.duration;
	if (job.image && job.image.url) {
		const r = await C.fetchMedia(job.image.url, ownFile);
		if (r.error) {
			if (k.require_fetchable_images) return failed('invalid_argument', `Failed to fetch the image at ${String(job.image.url).slice(0, 200)}: ${r.error}`);
		} else {
			dims = await core.media.probeImage(r.buf);
			if (!dims && k.require_fetchable_images) return failed('invalid_argument', 'The image could not be decoded. Supported formats: JPEG, PNG, WebP.');
			image = dims ? r.buf : null;
		}
	}
	if (job.video && job.video.url) {
		const r = await C.fetchMedia(job.video.url, ownFile, { maxBytes: 500 * 1024 * 1024 });
		if (r.error) return failed('invalid_argument', `Failed to fetch the video: ${r.error}`);
		const info = await core.media.probe(core.media.saveInput(r.buf).file, C.sha256(r.buf));
		if (!info) return failed('invalid_argument', 'The video could not be decoded.');
		dims = info;
		const src = info.duration ? Math.round(info.duration) : 6;
		if (job.kind === 'edit' && info.duration > 8.7) return failed('invalid_argument', 'The input video must be at most 8.7 seconds long.');
		duration = job.kind === 'edit' ? src : src + job.ext;
	} else if (job.kind !== 'generation') duration = job.kind === 'edit' ? 6 : 6 + job.ext;
	job.duration = duration;
	if (job.plannedFailure) return failed(job.plannedFailure.code, job.plannedFailure.message);
	let size = core.defaultSize();
	if (k.honor_resolution) { const s = SHORT_SIDE[job.resolution] || 480; size = [Math.round(s * 16 / 9) & ~1, s]; }
	const [a, b] = String(job.aspect || '16:9').split(':').map(Number);
	size = C.sizeForAspect(size, dims ? dims.width / dims.height : a / b);
	if (job.moderated) return { state: 'done', moderated: true };
	const made = await core.media.video({ image, duration, width: size[0], height: size[1], audio: job.audio,
		prompt: job.prompt, quality: k.video_quality });
	const name = `xai-video-${job.id}.mp4`;
	core.files.put(name, { path: made.path, type: 'video/mp4', size: made.size, etag: made.sha256.slice(0, 32), expires_at: Date.now() + core.ms(k.url_ttl) });
	const out = { state: 'done', url: `${core.base}/files/${name}`, size: made.size };
	if (job.uploadUrl) out.storage_error = await putTo(job.uploadUrl, made.path);
	return out;
}

// PUTs a made file to a client's upload URL (loopback only); an error text or undefined.
function putTo(url, file) {
	return new Promise((resolve) => {
		let u;
		try { u = new URL(url); } catch (e) { return resolve('bad upload_url'); }
		if (u.protocol !== 'http:' || !C.isLoopbackHost(u.hostname)) return resolve(`cannot reach ${u.host} from the simulator`);
		const size = fs.statSync(file).size;
		const req = http.request(u, { method: 'PUT', timeout: 30000, headers: { 'content-type': 'video/mp4', 'content-length': size } }, (r) => {
			r.resume();
			resolve(r.statusCode >= 200 && r.statusCode < 300 ? undefined : `upload failed with HTTP ${r.statusCode}`);
		});
		req.on('timeout', () => req.destroy(new Error('timed out')));
		req.on('error', (e) => resolve(`upload failed: ${e.message}`));
		fs.createReadStream(file).pipe(req);
		return undefined;
	});
}

function price(model, resolution) {
	const table = (core.knobs.prices && core.knobs.prices[model]) || PRICES[model] || {};
	return Number(table[resolution] ?? table['480p'] ?? 5);
}

// ------------------------------------------------------------------ endpoints

async function submit(ctx, kind) {
	if (!authorized(ctx)) return;
	const parsed = await ctx.json(32 * 1024 * 1024);
	if (ctx.fault('submit')) return;
	if (rateLimited(ctx, 'submit')) return;
	if (!parsed.ok) return ctx.sendNow(422, `Failed to deserialize the JSON body into the target type: ${parsed.error.replace(/^Unexpected/, 'expected value, found')} at line 1 column 1`);
	const b = parsed.value;
	if (!b || typeof b !== 'object' || Array.isArray(b)) return ctx.sendNow(422, `Failed to deserialize the JSON body into the target type: invalid type: ${kindOf(b)}, expected struct GenerateVideoRequest at line 1 column 1`);
	let spec;
	try { spec = kind === 'generation' ? checkGeneration(b) : checkEdit(b, kind); } catch (e) {
		if (e instanceof Deser) return ctx.sendNow(422, `Failed to deserialize the JSON body into the target type: ${e.message}`);
		throw e;
	}
	ctx.model = spec.model;
	if (spec.error) return ctx.sendNow(400, invalid(spec.error));
	if (jobs.size >= core.knobs.max_jobs) for (const [id, j] of jobs) { if (jobs.size < core.knobs.max_jobs * 0.9) break; if (j.result) jobs.delete(id); }
	const id = core.uuid();
	const k = core.knobs;
	const job = Object.assign({ id, kind, created: Date.now(), polls: 0, result: null }, spec);
	if (k.fail_jobs > 0) { k.fail_jobs--; job.plannedFailure = { code: k.fail_code, message: k.fail_message || `Injected failure (${k.fail_code})` }; } else if (k.fail_p > 0 && core.rng.next() < k.fail_p) job.plannedFailure = { code: k.fail_code, message: k.fail_message || `Injected failure (${k.fail_code})` };
	if (!job.plannedFailure && k.moderate_jobs > 0) { k.moderate_jobs--; job.moderated = true; }
	job.work = work(job).catch((e) => { process.stderr.write(`xai_sim: generation failed: ${e.stack || e}\n`); return failed('internal_error', 'Internal error'); })
		.then((r) => { job.result = r; job.done_at = Date.now(); job.image = job.video = null; settleLedger(job); return r; });
	jobs.set(id, job);
	const seconds = kind === 'generation' ? job.duration : kind === 'extension' ? job.ext : null;
	job.ledger = { request_id: id, endpoint: `videos/${kind === 'generation' ? 'generations' : kind === 'edit' ? 'edits' : 'extensions'}`,
		seconds, audio: job.audio, cents: seconds === null ? null : C.round(seconds * price(job.model, job.resolution)),
		billed: true, outcome: 'pending', model: job.model, resolution: job.resolution,
		input_sha256: C.jsonDigest({ kind, b }), input: clipInput(b), at: nowIso() };
	core.ledger.push(job.ledger);
	ctx.send(200, { request_id: id });
}

// The ledger entry after the job ended: edits are priced on the output length.
function settleLedger(job) {
	const e = job.ledger;
	const r = job.result;
	if (e.cents === null) {
		e.seconds = job.duration;
		e.cents = C.round(job.duration * price(job.model, job.resolution));
	}
	e.outcome = r.state === 'done' ? (r.moderated ? 'moderated' : 'ok') : r.error.code;
	if (r.state === 'failed') e.billed = false;
}

function clipInput(b) {
	const o = {};
	for (const [k, v] of Object.entries(b)) o[k] = typeof v === 'string' && v.length > 300 ? `${v.slice(0, 300)}...` : v;
	if (b.image && typeof b.image.url === 'string' && b.image.url.length > 300) o.image = { url: `${b.image.url.slice(0, 300)}...` };
	return o;
}

// The body of a finished job.
function doneBody(job) {
	const r = job.result;
	const legacy = core.knobs.legacy_shape;
	if (r.state === 'failed') {
		return legacy ? { status: 'failed', video: { duration: 0, respect_moderation: true }, model: '', error: r.error }
			: { status: 'failed', error: r.error };
	}
	const video = r.moderated ? { url: null, duration: job.duration, respect_moderation: false }
		: { url: r.url, duration: job.duration, respect_moderation: true };
	if (r.storage_error) video.storage_error = r.storage_error;
	const ticks = Math.round(job.ledger.cents * 1e8);
	if (legacy) return { video, model: job.model };
	return { status: 'done', video, model: job.model, progress: 100, usage: { cost_in_usd_ticks: ticks } };
}

async function poll(ctx, id) {
	if (!authorized(ctx)) return;
	if (ctx.fault('status')) return;
	if (rateLimited(ctx, 'poll')) return;
	const job = jobs.get(id);
	if (!job) return ctx.send(404, { code: 'not-found', error: `No deferred video found for request_id ${id}` });
	const k = core.knobs;
	if (k.job_ttl !== null && k.job_ttl !== undefined && Date.now() - job.created > core.ms(k.job_ttl)) return ctx.send(200, { status: 'expired' });
	let progress;
	if (opts.mode === 'deterministic') {
		job.polls++;
		const n = Number(k.polls_before_done) || 0;
		if (job.polls > n) await job.work;
		else progress = Math.floor((99 * (job.polls - 1)) / Math.max(1, n));
	} else {
		const elapsed = Date.now() - job.created, total = core.ms(processingS());
		if (elapsed < total || !job.result) progress = Math.min(99, Math.floor((99 * elapsed) / Math.max(1, total)));
	}
	if (progress !== undefined) {
		if (k.empty_202) return ctx.send(202, null, { 'content-type': 'application/json' });
		return ctx.send(202, k.legacy_shape ? { status: 'pending' } : { status: 'pending', progress });
	}
	ctx.send(200, doneBody(job));
}

function processingS() { return Number(core.knobs.processing_s) || 0; }

// Images are made synchronously.
async function images(ctx) {
	if (!authorized(ctx)) return;
	const parsed = await ctx.json(1024 * 1024);
	if (ctx.fault('images')) return;
	if (rateLimited(ctx, 'submit')) return;
	if (!parsed.ok) return ctx.sendNow(422, `Failed to deserialize the JSON body into the target type: ${parsed.error} at line 1 column 1`);
	const b = parsed.value;
	if (!b || typeof b !== 'object' || Array.isArray(b)) return ctx.sendNow(422, `Failed to deserialize the JSON body into the target type: invalid type: ${kindOf(b)}, expected struct GenerateImageRequest at line 1 column 1`);
	if (typeof b.prompt !== 'string') return ctx.sendNow(422, b.prompt === undefined ? 'Failed to deserialize the JSON body into the target type: missing field `prompt` at line 1 column 1' : `Failed to deserialize the JSON body into the target type: ${deser('prompt', b.prompt, 'a string').message}`);
	if (b.size !== undefined) return ctx.sendNow(400, invalid('Argument not supported: size'));
	const model = b.model || 'grok-imagine-image';
	if (!(model in IMAGE_MODELS)) return ctx.sendNow(400, invalid(`The model ${model} does not exist or your team ${team} does not have access to it.`));
	const n = b.n === undefined || b.n === null ? 1 : b.n;
	if (!Number.isInteger(n) || n < 1 || n > 10) return ctx.sendNow(400, invalid('n must be between 1 and 10'));
	const format = b.response_format || 'url';
	if (!['url', 'b64_json'].includes(format)) return ctx.sendNow(400, invalid('response_format must be url or b64_json'));
	const aspect = b.aspect_ratio || 'auto';
	if (!IMAGE_ASPECTS.includes(aspect)) return ctx.sendNow(400, invalid(`Invalid aspect_ratio ${aspect}`));
	const [x, y] = aspect === 'auto' ? [1, 1] : aspect.split(':').map(Number);
	const [w, h] = C.sizeForAspect([256, 256], x / y);
	const data = [];
	for (let i = 0; i < n; i++) {
		const made = await core.media.image(w, h, i);
		const item = { mime_type: 'image/png', revised_prompt: '', respect_moderation: true };
		if (format === 'b64_json') item.b64_json = fs.readFileSync(made.path).toString('base64');
		else {
			const name = `xai-image-${core.uuid()}.png`;
			core.files.put(name, { path: made.path, type: 'image/png', size: made.size, expires_at: Date.now() + core.ms(core.knobs.url_ttl) });
			item.url = `${core.base}/files/${name}`;
		}
		data.push(Object.assign(format === 'b64_json' ? {} : { url: item.url }, item));
	}
	const cents = IMAGE_MODELS[model] * n;
	const id = core.uuid();
	core.ledger.push({ request_id: id, endpoint: 'images/generations', seconds: null, audio: false, cents, billed: true, outcome: 'ok',
		model, input_sha256: C.jsonDigest(b), input: clipInput(b), at: nowIso() });
	ctx.send(200, { data, usage: { cost_in_usd_ticks: Math.round(cents * 1e8) } });
}

function models(ctx, id) {
	if (!authorized(ctx)) return;
	const list = Object.keys(PRICES).map((m) => ({ id: m, object: 'model', owned_by: 'xai',
		resolutions: Object.keys(PRICES[m]), durations: { min: 1, max: 15 }, aliases: Object.keys(ALIASES).filter((a) => ALIASES[a] === m) }));
	if (id === undefined) return ctx.sendNow(200, { models: list });
	const m = list.find((x) => x.id === (ALIASES[id] || id));
	return m ? ctx.sendNow(200, m) : ctx.sendNow(404, { code: 'not-found', error: `Model ${id} not found` });
}

function file(ctx, name) {
	if (ctx.fault('cdn', true)) return;
	const f = core.files.get(name);
	if (!f) return ctx.send(404, { code: 'not-found', error: 'The file does not exist or has expired.' });
	ctx.sendFile(f);
}

async function route(ctx) {
	const p = ctx.parts, m = ctx.method;
	if (p[0] === 'v1') {
		const r = p.slice(1);
		if (m === 'POST' && r[0] === 'videos' && r.length === 2) {
			const kind = { generations: 'generation', edits: 'edit', extensions: 'extension' }[r[1]];
			if (kind) return submit(ctx, kind);
		}
		if (m === 'GET' && r[0] === 'videos' && r.length === 2) return poll(ctx, r[1]);
		if (m === 'POST' && r[0] === 'images' && r[1] === 'generations' && r.length === 2) return images(ctx);
		if (m === 'GET' && r[0] === 'video-generation-models' && r.length <= 2) return models(ctx, r[1]);
		return ctx.sendNow(404, { code: 'not-found', error: `No route for ${m} ${ctx.url.pathname}` });
	}
	if ((m === 'GET' || m === 'HEAD') && p[0] === 'files' && p.length === 2) return file(ctx, p[1]);
	return ctx.sendNow(404, { code: 'not-found', error: 'Not found' });
}

function control(ctx, what) {
	if (what === 'jobs') {
		ctx.sendNow(200, [...jobs.values()].map((j) => ({ request_id: j.id, kind: j.kind, model: j.model, duration: j.duration,
			resolution: j.resolution, aspect_ratio: j.aspect, created: new Date(j.created).toISOString(),
			state: j.result ? j.result.state : 'pending', polls: j.polls })));
		return true;
	}
	return false;
}

core.listen();
