// The Fal.ai simulator's queue contract over real HTTP: auth, submit, status
// progression, results (real MP4s), validation at result time, cancel,
// request timeouts, queue limits, SSE, webhooks, namespaced apps.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const path = require('path');
const fs = require('fs');
const os = require('os');
const http = require('http');
const crypto = require('crypto');
const { execFileSync } = require('child_process');
const C = require('../common');

const FAL = path.join(__dirname, '..', 'fal_sim.js');
const KEY = { authorization: 'Key kid:secret' };
const V26 = '/fal-ai/kling-video/v2.6/pro/image-to-video';
const V21 = '/fal-ai/kling-video/v2.1/pro/image-to-video';
const APP = '/fal-ai/kling-video';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fal-test-'));
let sim, base, imgServer, imgBase;

// Test images: a 16:9 JPEG and a 9:16 PNG, as data: URLs and over loopback HTTP.
function makeImage(name, size, color) {
	const file = path.join(tmp, name);
	execFileSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', `color=c=${color}:s=${size}`, '-frames:v', '1', file]);
	return file;
}
const wide = makeImage('wide.jpg', '640x360', 'teal');
const tall = makeImage('tall.png', '360x640', 'orange');
const dataUrl = (file, type) => `data:${type};base64,${fs.readFileSync(file).toString('base64')}`;
const WIDE = dataUrl(wide, 'image/jpeg');

const q = (p) => `${base}/queue${p}`;
const get = (url, headers = KEY) => C.request('GET', url, { headers });
const post = (url, body, headers = KEY) => C.request('POST', url, { headers, body });
const config = (knobs) => C.request('POST', `${base}/_sim/config`, { body: knobs });
const input26 = (extra = {}) => Object.assign({ prompt: 'a slow walk through the room', start_image_url: WIDE, duration: '5', generate_audio: false }, extra);

async function submit(endpoint, input, headers = KEY, query = '') {
	const r = await post(q(endpoint) + query, input, headers);
	assert.equal(r.status, 200, r.text);
	return r.json;
}

// Polls a request's status until COMPLETED; returns the list of states seen.
// A 1080p clip takes seconds to render on a loaded machine: 60 s at most.
async function untilCompleted(id, app = APP) {
	const seen = [];
	for (const end = Date.now() + 60000; Date.now() < end;) {
		const r = await get(q(`${app}/requests/${id}/status`));
		seen.push([r.status, r.json.status]);
		if (r.json.status === 'COMPLETED') return seen;
		await new Promise((res) => setTimeout(res, 15));
	}
	throw new Error(`request ${id} never completed`);
}

function probe(file) {
	return JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_entries',
		'format=duration:stream=codec_type,codec_name,width,height,r_frame_rate,pix_fmt,sample_rate,channels', '-of', 'json', file]).toString());
}

async function download(url) {
	const r = await C.request('GET', url);
	assert.equal(r.status, 200);
	const file = path.join(tmp, `${crypto.randomUUID()}.mp4`);
	fs.writeFileSync(file, r.body);
	return file;
}

test.before(async () => {
	sim = await C.spawnSim(FAL, ['--video-size', 'small', '--key', 'kid:secret', '--seed', '7']);
	base = sim.base;
	imgServer = http.createServer((req, res) => {
		if (req.url === '/tall.png') { res.writeHead(200, { 'content-type': 'image/png' }); return res.end(fs.readFileSync(tall)); }
		if (req.url === '/broken.jpg') { res.writeHead(200, { 'content-type': 'image/jpeg' }); return res.end('not an image'); }
		res.writeHead(404); return res.end();
	});
	await new Promise((r) => imgServer.listen(0, '127.0.0.1', r));
	imgBase = `http://127.0.0.1:${imgServer.address().port}`;
});
test.after(async () => {
	assert.equal(await sim.stop(), 0, 'exits 0 on SIGTERM');
	imgServer.close();
	fs.rmSync(tmp, { recursive: true, force: true });
});
test.beforeEach(() => C.request('POST', `${base}/_sim/reset`));

test('prints one listening line on stdout and nothing else', () => {
	assert.match(sim.stdout(), /^\{"listening":"http:\/\/127\.0\.0\.1:\d+"\}\n$/);
});

test('auth: missing, malformed and unknown keys get 401 with Fal\'s messages', async () => {
	let r = await post(q(V26), input26(), {});
	assert.equal(r.status, 401);
	assert.deepEqual(r.json, { detail: 'Authorization header is required' });
	assert.ok(r.headers['x-fal-request-id']);
	r = await post(q(V26), input26(), { authorization: 'Key nocolon' });
	assert.equal(r.status, 401);
	assert.match(r.json.detail, /Invalid Key Authorization header format/);
	r = await post(q(V26), input26(), { authorization: 'Key kid:wrong' });
	assert.equal(r.status, 401);
	assert.deepEqual(r.json, { detail: 'No user found for Key ID and Secret' });
	r = await get(q(`${APP}/requests/x/status`), {});
	assert.equal(r.status, 401);
	r = await post(`${base}/rest/storage/upload/initiate`, { content_type: 'image/png' }, {});
	assert.equal(r.status, 401);
});

test('locked account: 403 on submit and initiate, status still answers', async () => {
	const { request_id: id } = await submit(V26, input26());
	await config({ locked: true });
	let r = await post(q(V26), input26());
	assert.equal(r.status, 403);
	assert.match(r.json.detail, /^User is locked\. Reason: Exhausted balance/);
	r = await post(`${base}/rest/storage/upload/initiate?storage_type=fal-cdn-v3`, { content_type: 'image/png', file_name: 'a.png' });
	assert.equal(r.status, 403);
	r = await get(q(`${APP}/requests/${id}/status`));
	assert.ok([200, 202].includes(r.status));
	await config({ locked: 'admin' });
	r = await post(q(V26), input26());
	assert.match(r.json.detail, /Admin lock/);
});

test('submit: 200 IN_QUEUE with the owner/app URLs and x-fal-request-id', async () => {
	const r = await post(q(V26), input26());
	assert.equal(r.status, 200);
	const b = r.json;
	assert.equal(b.status, 'IN_QUEUE');
	assert.match(b.request_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
	assert.equal(r.headers['x-fal-request-id'], b.request_id);
	assert.equal(b.response_url, q(`${APP}/requests/${b.request_id}`));
	assert.equal(b.status_url, `${b.response_url}/status`);
	assert.equal(b.cancel_url, `${b.response_url}/cancel`);
	assert.equal(typeof b.queue_position, 'number');
	assert.ok(!('gateway_request_id' in b));
});

test('status: IN_QUEUE/IN_PROGRESS answer 202, COMPLETED 200, with the fields clients read', async () => {
	await config({ queue_s: 0.15, processing_s: 0.3 });
	const { request_id: id } = await submit(V26, input26());
	const seen = await untilCompleted(id);
	const states = [...new Set(seen.map(([, s]) => s))];
	assert.deepEqual(states, ['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
	for (const [code, s] of seen) assert.equal(code, s === 'COMPLETED' ? 200 : 202);
	let r = await get(q(`${APP}/requests/${id}/status?logs=0`));
	assert.equal(r.json.logs, null);
	assert.equal(typeof r.json.metrics.inference_time, 'number');
	assert.ok(!('error' in r.json));
	for (const v of ['1', 'true']) {
		r = await get(q(`${APP}/requests/${id}/status?logs=${v}`));
		assert.ok(Array.isArray(r.json.logs) && r.json.logs.length >= 1);
		assert.deepEqual(Object.keys(r.json.logs[0]).sort(), ['level', 'message', 'source', 'timestamp']);
	}
	r = await get(q(`${APP}/requests/${id}/status?logs=false`));
	assert.equal(r.json.logs, null);
	for (const k of ['request_id', 'response_url', 'status_url', 'cancel_url']) assert.ok(r.json[k], k);
});

test('status: the queue position counts down', async () => {
	await config({ queue_s: 0.4, start_position: 5 });
	const { request_id: id, queue_position: p0 } = await submit(V26, input26());
	assert.ok(p0 >= 4, `starts near 5, got ${p0}`);
	await new Promise((r) => setTimeout(r, 250));
	const r = await get(q(`${APP}/requests/${id}/status`));
	assert.equal(r.json.status, 'IN_QUEUE');
	assert.ok(r.json.queue_position < p0);
});

test('unknown ids and another app get 404', async () => {
	const { request_id: id } = await submit(V26, input26());
	let r = await get(q(`${APP}/requests/00000000-0000-4000-8000-000000000000/status`));
	assert.equal(r.status, 404);
	assert.deepEqual(r.json, { detail: 'Request not found' });
	r = await get(q(`/fal-ai/other-app/requests/${id}/status`));
	assert.equal(r.status, 404);
	r = await get(q(`/fal-ai/other-app/requests/${id}`));
	assert.equal(r.status, 404);
	r = await post(q('/fal-ai/no-such-model/v1'), input26());
	assert.equal(r.status, 404);
});

test('result: 400 while in progress, then the bare output on both URL forms; the MP4 is real', async () => {
	await config({ queue_s: 0.2 });
	const { request_id: id } = await submit(V26, input26({ generate_audio: true }));
	let r = await get(q(`${APP}/requests/${id}`));
	assert.equal(r.status, 400);
	assert.deepEqual(r.json, { detail: 'Request is still in progress' });
	await untilCompleted(id);
	r = await get(q(`${APP}/requests/${id}`));
	const r2 = await get(q(`${APP}/requests/${id}/response`));
	assert.equal(r.status, 200);
	assert.equal(r.headers['x-fal-request-id'], id);
	assert.deepEqual(r.json, r2.json);
	assert.deepEqual(Object.keys(r.json), ['video']);
	const v = r.json.video;
	assert.equal(v.content_type, 'video/mp4');
	assert.equal(v.file_name, 'output.mp4');
	assert.match(v.url, new RegExp(`^${base}/cdn/files/`));
	const file = await download(v.url);
	assert.equal(fs.statSync(file).size, v.file_size);
	const info = probe(file);
	const video = info.streams.find((s) => s.codec_type === 'video');
	const audio = info.streams.find((s) => s.codec_type === 'audio');
	assert.equal(video.codec_name, 'h264');
	assert.equal(video.pix_fmt, 'yuv420p');
	assert.equal(video.r_frame_rate, '24/1');
	assert.deepEqual([video.width, video.height], [320, 180]);
	assert.equal(Number(info.format.duration), 5);
	assert.equal(audio.codec_name, 'aac');
	assert.equal(audio.sample_rate, '48000');
	assert.equal(audio.channels, 2);
});

test('outputs follow the image\'s aspect, the asked duration, and have no audio without generate_audio', async () => {
	await config({ queue_s: 0, processing_s: 0 });
	const { request_id: id } = await submit(V26, input26({ start_image_url: `${imgBase}/tall.png`, duration: '10', end_image_url: WIDE }));
	await untilCompleted(id);
	const r = await get(q(`${APP}/requests/${id}`));
	assert.equal(r.status, 200, r.text);
	const info = probe(await download(r.json.video.url));
	assert.equal(info.streams.length, 1);
	assert.deepEqual([info.streams[0].width, info.streams[0].height], [180, 320]);
	assert.equal(Number(info.format.duration), 10);
	// the video_size knob (1080p output for benchmarks)
	await config({ queue_s: 0, processing_s: 0, video_size: '1080p' });
	const s2 = await submit(V26, input26());
	await untilCompleted(s2.request_id);
	const r2 = await get(q(`${APP}/requests/${s2.request_id}`));
	const i2 = probe(await download(r2.json.video.url));
	assert.deepEqual([i2.streams[0].width, i2.streams[0].height], [1920, 1080]);
});

test('validation: wrong fields fail at result time with a 422 detail list', async () => {
	await config({ queue_s: 0, processing_s: 0 });
	const cases = [
		[V26, input26({ duration: 5 }), 'duration', 'literal_error'],
		[V26, input26({ duration: '7' }), 'duration', 'literal_error'],
		[V26, input26({ prompt: 'x'.repeat(2501) }), 'prompt', 'string_too_long'],
		[V26, input26({ prompt: '' }), 'prompt', 'string_too_short'],
		[V26, input26({ generate_audio: 'yes' }), 'generate_audio', 'bool_type'],
		[V26, { prompt: 'p', image_url: WIDE, duration: '5' }, 'start_image_url', 'missing'],
		[V26, input26({ cfg_scale: 0.5 }), 'cfg_scale', 'extra_forbidden'],
		[V21, { prompt: 'p', start_image_url: WIDE, duration: '5' }, 'image_url', 'missing'],
		[V21, { prompt: 'p', image_url: WIDE, duration: '5', cfg_scale: 1.5 }, 'cfg_scale', 'less_than_equal'],
		[V21, { prompt: 'p', image_url: WIDE, duration: '5', generate_audio: false }, 'generate_audio', 'extra_forbidden'],
	];
	for (const [ep, input, field, type] of cases) {
		const { request_id: id } = await submit(ep, input);
		const seen = await untilCompleted(id);
		const st = (await get(q(`${APP}/requests/${id}/status`))).json;
		assert.equal(st.error_type, type, `${field}: ${JSON.stringify(st)}`);
		assert.equal(seen[seen.length - 1][0], 200);
		const r = await get(q(`${APP}/requests/${id}`));
		assert.equal(r.status, 422, `${field} ${type}`);
		const d = r.json.detail.find((x) => x.loc[1] === field);
		assert.ok(d, `${field} in ${r.text}`);
		assert.equal(d.type, type);
		assert.deepEqual(d.loc, ['body', field]);
		assert.equal(typeof d.msg, 'string');
	}
	// v2.1 with its own field names is fine
	const ok = await submit(V21, { prompt: 'p', image_url: WIDE, tail_image_url: WIDE, duration: '10', cfg_scale: 0.5 });
	await untilCompleted(ok.request_id);
	assert.equal((await get(q(`${APP}/requests/${ok.request_id}`))).status, 200);
});

test('validation: validate_at_submit answers 422 straight away; a body that is not JSON is a 422 at once', async () => {
	await config({ validate_at_submit: true });
	let r = await post(q(V26), input26({ duration: 5 }));
	assert.equal(r.status, 422);
	assert.equal(r.json.detail[0].type, 'literal_error');
	r = await post(q(V26), input26({ start_image_url: 'http://example.com/x.jpg' }));
	assert.equal(r.status, 422);
	assert.equal(r.json.detail[0].type, 'file_download_error');
	r = await post(q(V26), input26());
	assert.equal(r.status, 200);
	r = await C.request('POST', q(V26), { headers: Object.assign({ 'content-type': 'application/json' }, KEY), body: '{"prompt": ' });
	assert.equal(r.status, 422);
	assert.equal(r.json.detail[0].type, 'json_invalid');
	r = await post(q(V26), [1, 2]);
	assert.equal(r.status, 422);
	const ledger = (await get(`${base}/_sim/ledger`)).json;
	assert.equal(ledger.length, 1, 'refused submits are not billed');
});

test('images: unreachable → file_download_error, undecodable → image_load_error (at result time)', async () => {
	await config({ queue_s: 0, processing_s: 0 });
	const cases = [['http://example.com/photo.jpg', 'file_download_error'], [`${imgBase}/missing.jpg`, 'file_download_error'],
		[`${imgBase}/broken.jpg`, 'image_load_error'], [`${base}/cdn/files/nope/x.jpg`, 'file_download_error']];
	for (const [url, type] of cases) {
		const { request_id: id } = await submit(V26, input26({ start_image_url: url }));
		await untilCompleted(id);
		const r = await get(q(`${APP}/requests/${id}`));
		assert.equal(r.status, 422, url);
		assert.equal(r.json.detail[0].type, type, url);
		assert.deepEqual(r.json.detail[0].loc, ['body', 'start_image_url']);
	}
	await config({ queue_s: 0, processing_s: 0, enforce_image_limits: true });
	const small = dataUrl(makeImage('small.png', '200x200', 'red'), 'image/png');
	const { request_id: id } = await submit(V26, input26({ start_image_url: small }));
	await untilCompleted(id);
	assert.equal((await get(q(`${APP}/requests/${id}`))).json.detail[0].type, 'image_too_small');
});

test('cancel: queued → 499 client_cancelled; in progress goes on unless honor_cancel; completed → 400; unknown → 404', async () => {
	await config({ queue_s: 5 });
	const a = await submit(V26, input26());
	let r = await C.request('PUT', a.cancel_url, { headers: KEY });
	assert.equal(r.status, 202);
	assert.deepEqual(r.json, { status: 'CANCELLATION_REQUESTED' });
	let st = (await get(a.status_url)).json;
	assert.equal(st.status, 'COMPLETED');
	assert.equal(st.error_type, 'client_cancelled');
	r = await get(a.response_url);
	assert.equal(r.status, 499);
	assert.equal(r.json.error_type, 'client_cancelled');
	r = await C.request('PUT', a.cancel_url, { headers: KEY });
	assert.equal(r.status, 400);
	assert.deepEqual(r.json, { status: 'ALREADY_COMPLETED' });
	r = await C.request('PUT', q(`${APP}/requests/${crypto.randomUUID()}/cancel`), { headers: KEY });
	assert.equal(r.status, 404);
	assert.deepEqual(r.json, { status: 'NOT_FOUND' });

	await config({ queue_s: 0, processing_s: 0.4 });
	const b = await submit(V26, input26());
	await new Promise((res) => setTimeout(res, 100));
	assert.equal((await get(b.status_url)).json.status, 'IN_PROGRESS');
	assert.equal((await C.request('PUT', b.cancel_url, { headers: KEY })).status, 202);
	await untilCompleted(b.request_id);
	assert.equal((await get(b.response_url)).status, 200, 'the app ignored the cancel');

	await config({ queue_s: 0, processing_s: 0.4, honor_cancel: true });
	const c = await submit(V26, input26());
	await new Promise((res) => setTimeout(res, 100));
	assert.equal((await C.request('PUT', c.cancel_url, { headers: KEY })).status, 202);
	st = (await get(c.status_url)).json;
	assert.equal(st.status, 'COMPLETED');
	assert.equal((await get(c.response_url)).status, 499);
	const ledger = (await get(`${base}/_sim/ledger`)).json;
	assert.deepEqual(ledger.map((e) => e.billed), [false, true, false]);
});

test('X-Fal-Request-Timeout: <= 0.1 is a 400; a start deadline that passes while queued ends in startup_timeout', async () => {
	let r = await post(q(V26), input26(), Object.assign({ 'x-fal-request-timeout': '0.1' }, KEY));
	assert.equal(r.status, 400);
	assert.equal(r.json.error_type, 'bad_request');
	await config({ queue_s: 5 });
	const a = await submit(V26, input26(), Object.assign({ 'X-Fal-Request-Timeout': '0.2', 'X-Fal-Queue-Priority': 'low' }, KEY));
	await untilCompleted(a.request_id);
	const st = (await get(a.status_url)).json;
	assert.equal(st.error_type, 'startup_timeout');
	r = await get(a.response_url);
	assert.equal(r.status, 504);
	assert.equal(r.headers['x-fal-request-timeout-type'], 'user');
	const reqs = (await get(`${base}/_sim/requests?method=POST`)).json;
	assert.equal(reqs[reqs.length - 1].headers['x-fal-queue-priority'], 'low', 'headers are recorded');
});

test('fal_max_queue_length: 429 when more than N wait', async () => {
	await config({ queue_s: 5 });
	await submit(V26, input26(), KEY, '?fal_max_queue_length=1');
	await submit(V26, input26(), KEY, '?fal_max_queue_length=1');
	const r = await post(q(V26) + '?fal_max_queue_length=1', input26());
	assert.equal(r.status, 429);
	assert.ok(r.json.error_type);
});

test('max_concurrent: extra jobs wait IN_QUEUE, normal priority before low', async () => {
	await config({ queue_s: 0, processing_s: 0.3, max_concurrent: 1 });
	const a = await submit(V26, input26());
	const low = await submit(V26, input26(), Object.assign({ 'x-fal-queue-priority': 'low' }, KEY));
	const normal = await submit(V26, input26());
	await new Promise((res) => setTimeout(res, 100));
	assert.equal((await get(a.status_url)).json.status, 'IN_PROGRESS');
	assert.equal((await get(low.status_url)).json.status, 'IN_QUEUE');
	await untilCompleted(a.request_id);
	await new Promise((res) => setTimeout(res, 50));
	assert.equal((await get(normal.status_url)).json.status, 'IN_PROGRESS');
	assert.equal((await get(low.status_url)).json.status, 'IN_QUEUE');
	await untilCompleted(low.request_id);
});

test('result_ttl: the result expires (404) but the status stays', async () => {
	await config({ queue_s: 0, processing_s: 0, result_ttl: 0.2 });
	const a = await submit(V26, input26());
	await untilCompleted(a.request_id);
	assert.equal((await get(a.response_url)).status, 200);
	await new Promise((res) => setTimeout(res, 250));
	assert.equal((await get(a.response_url)).status, 404);
	assert.equal((await get(a.status_url)).status, 200);
});

test('SSE: one data line per state, closed after COMPLETED', async () => {
	await config({ queue_s: 0.1, processing_s: 0.2 });
	const a = await submit(V26, input26());
	const r = await get(`${a.status_url}/stream?logs=1`, Object.assign({ accept: 'text/event-stream' }, KEY));
	assert.equal(r.status, 200);
	assert.match(r.headers['content-type'], /^text\/event-stream/);
	const events = r.text.split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)).status);
	assert.deepEqual(events, ['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']);
});

test('webhooks: a signed POST that verifies against the JWKS; duplicates on demand', async () => {
	const got = [];
	const hook = http.createServer((req, res) => {
		const chunks = [];
		req.on('data', (c) => chunks.push(c));
		req.on('end', () => { got.push({ headers: req.headers, body: Buffer.concat(chunks) }); res.end('ok'); });
	});
	await new Promise((r) => hook.listen(0, '127.0.0.1', r));
	try {
		await config({ queue_s: 0, processing_s: 0, webhook_duplicate: true });
		const url = `http://127.0.0.1:${hook.address().port}/hook`;
		const a = await submit(V26, input26(), KEY, `?fal_webhook=${encodeURIComponent(url)}`);
		assert.equal(a.gateway_request_id, a.request_id);
		for (let i = 0; i < 200 && got.length < 2; i++) await new Promise((res) => setTimeout(res, 20));
		assert.equal(got.length, 2);
		const { headers, body } = got[0];
		const payload = JSON.parse(body);
		assert.equal(payload.status, 'OK');
		assert.equal(payload.request_id, a.request_id);
		assert.ok(payload.payload.video.url);
		const jwks = (await get(`${base}/rest/.well-known/jwks.json`, {})).json;
		const key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwks.keys[0].x }, format: 'jwk' });
		const msg = [headers['x-fal-webhook-request-id'], headers['x-fal-webhook-user-id'], headers['x-fal-webhook-timestamp'],
			crypto.createHash('sha256').update(body).digest('hex')].join('\n');
		assert.ok(crypto.verify(null, Buffer.from(msg), key, Buffer.from(headers['x-fal-webhook-signature'], 'hex')));
	} finally { hook.close(); }
});

test('namespaced apps (workflows/owner/app) keep three segments', async () => {
	// The simulator has no workflow models: the submit is a 404, but the URL layout is parsed.
	const r = await post(q('/workflows/someone/flow/run'), { a: 1 });
	assert.equal(r.status, 404);
	const st = await get(q('/workflows/someone/flow/requests/abc/status'));
	assert.equal(st.status, 404);
	assert.deepEqual(st.json, { detail: 'Request not found' });
});

test('ffmpeg-api tools: extract-frame, metadata and merge-videos on real files', async () => {
	await config({ queue_s: 0, processing_s: 0 });
	const clip = await submit(V26, input26());
	await untilCompleted(clip.request_id);
	const url = (await get(clip.response_url)).json.video.url;
	const run = async (ep, input) => {
		const s = await submit(`/fal-ai/ffmpeg-api/${ep}`, input);
		await untilCompleted(s.request_id, '/fal-ai/ffmpeg-api');
		return get(s.response_url);
	};
	let r = await run('extract-frame', { video_url: url, frame_type: 'last' });
	assert.equal(r.status, 200, r.text);
	assert.equal(r.json.images[0].content_type, 'image/png');
	assert.equal((await C.request('GET', r.json.images[0].url)).status, 200);
	r = await run('metadata', { media_url: url });
	assert.equal(r.json.media.duration, 5);
	assert.equal(r.json.media.width, 320);
	r = await run('merge-videos', { video_urls: [url, url] });
	assert.equal(r.status, 200, r.text);
	assert.equal(Number(probe(await download(r.json.video.url)).format.duration), 10);
});
